"""Hyper-parameters of the signal engine. Times in seconds, levels in dB, angles in degrees."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SignalParams:
    """Every tunable of the signal engine; ``SignalEngine(**options)`` overrides these."""

    # Speech activity: energy relative to a tracked noise floor and peak.
    floor_init_db: float = -60.0
    peak_init_db: float = -25.0
    floor_min_db: float = -70.0  # digital silence must not make faint noise look like speech
    floor_fall_s: float = 0.05
    floor_rise_db_s: float = 3.0  # slow, so continuous speech does not become the floor
    peak_attack_s: float = 0.02
    peak_decay_db_s: float = 2.0
    gate_db: float = 8.0  # activity starts this far above the floor ...
    range_db: float = 30.0  # ... or this far below the peak, whichever is higher
    min_range_db: float = 20.0
    speech_level_s: float = 0.8  # "recent speech energy" that scales head motion

    # Mouth: jaw follows the activity envelope; shape from the spectral tilt.
    jaw_max: float = 0.8
    jaw_attack_s: float = 0.012
    jaw_release_s: float = 0.045
    jaw_close_s: float = 0.025  # release once the gate has shut
    voicing_weight: float = 0.3  # unvoiced frames open the jaw this much less
    shape_gain: float = 2.5  # per log10 unit of upper-mid over low mel energy
    shape_max: float = 0.5
    shape_s: float = 0.05
    shape_mean_s: float = 2.0

    # Syllable nuclei (local energy maxima) and stress (nuclei above the recent nucleus level).
    syllable_prominence_db: float = 6.0
    syllable_gap_s: float = 0.12
    syllable_level_weight: float = 0.3
    stress_db: float = 1.5
    stress_span_db: float = 6.0

    # Blinks.
    blink_first_s: tuple[float, float] = (0.5, 3.0)
    blink_gap_s: tuple[float, float] = (2.0, 6.0)
    blink_duration_s: tuple[float, float] = (0.125, 0.2)
    double_blink_p: float = 0.12
    double_blink_gap_s: tuple[float, float] = (0.1, 0.25)

    # Brows.
    brow_gain: float = 0.5
    brow_attack_s: float = 0.05
    brow_decay_s: float = 0.3

    # Head pose.
    head_deg: tuple[float, float, float] = (2.0, 3.5, 1.2)  # pitch, yaw, roll sway amplitude
    head_freq_hz: tuple[float, float] = (0.06, 0.4)
    head_idle: float = 0.4  # sway gain in silence ...
    head_speech: float = 1.0  # ... plus this times the recent speech level
    jitter_deg: float = 2.5
    jitter_s: float = 0.15
    nod_deg: float = 3.0
    nod_attack_s: float = 0.07
    nod_decay_s: float = 0.2
    translation_gain: tuple[float, float] = (0.3, 0.2)  # x per yaw, y per pitch (IOD / rad)
    lean: float = 0.01  # scale sway

    # Body and hands (shoulder-width units).
    breath_hz: tuple[float, float] = (0.22, 0.28)
    breath_rise: float = 0.01
    body_lag_s: float = 0.4
    sway_yaw: float = 0.2
    sway_roll: float = 0.4
    gesture_min_stress: float = 0.3
    gesture_gap_s: float = 0.5
    gesture_attack_s: float = 0.12
    gesture_decay_s: float = 0.45
    gesture_wrist: tuple[float, float] = (0.08, -0.16)  # inward, up at full gesture
    gesture_elbow: tuple[float, float] = (-0.04, -0.05)  # outward, up
    finger_curl: float = 0.6

    # Speaking style (see engines/style.py): this engine's typical mean and spread per
    # expression coefficient in speech (EXPRESSIONS order), measured on synthetic speech; a
    # reference's statistics are taken relative to them.
    style_mean: tuple[float, ...] = (0.27, 0.07, 0.055, 0.0, 0.025, 0.025, 0.05, 0.0)
    style_spread: tuple[float, ...] = (0.30, 0.125, 0.11, 0.1, 0.135, 0.135, 0.07, 0.1)
    style_gain_range: tuple[float, float] = (0.25, 2.0)
    style_max_offset: float = 0.5

    # Control changes ease in instead of jumping.
    control_s: float = 0.2
