"""The ε schedule (T, s, l) and the learning-rate decay of VeriCompress.

ε is 0 until epoch ``s``, then grows linearly (per step) to ``ε_max`` over ``l`` epochs, and
stays there until the last epoch ``T - 1`` (CROWN-IBP's schedule, Zhang et al. 2020, Sec. 4).
The learning rate is constant until ε reaches ε_max (epoch ``s + l``) and then decays by
``gamma`` per epoch.
"""
from __future__ import annotations

from typing import Callable

from vnnx.errors import ConfigError
from vnnx.training import EpsilonSchedule, linear_ramp


def check_schedule(total_epochs: int, start: int, length: int) -> None:
    if total_epochs < 1 or start < 0 or length < 0:
        raise ConfigError(f"epsilon schedule needs T >= 1, s >= 0, l >= 0 (got T={total_epochs}, s={start}, "
                          f"l={length})")
    if start + length > total_epochs:
        raise ConfigError(f"epsilon schedule: s + l = {start + length} exceeds the T = {total_epochs} epochs; "
                          f"epsilon would never reach its maximum")


def epsilon_schedule(epsilon_max: float, total_epochs: int, start: int, length: int) -> EpsilonSchedule:
    """``schedule(epoch, fraction) -> ε``: 0 for ``epoch < s``, linear from 0 at epoch ``s`` to
    ``epsilon_max`` at epoch ``s + l``, then constant. Example: ``epsilon_schedule(0.1, 10, 2, 4)(4, 0.0) == 0.05``."""
    check_schedule(total_epochs, start, length)
    if epsilon_max < 0:
        raise ConfigError(f"epsilon must be >= 0, got {epsilon_max}")
    return linear_ramp(0.0, float(epsilon_max), float(length), warmup_epochs=float(start))


def lr_decay(start: int, length: int, gamma: float) -> Callable[[int], float]:
    """Multiplier of the learning rate at ``epoch``: 1 before ε reaches its maximum (epoch
    ``s + l``), ``gamma ** (epoch - s - l + 1)`` from then on."""
    if not 0 < gamma <= 1:
        raise ConfigError(f"lr decay gamma must lie in (0, 1], got {gamma}")
    return lambda epoch: 1.0 if epoch < start + length else gamma ** (epoch - start - length + 1)
