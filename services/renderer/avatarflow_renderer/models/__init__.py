"""Network definitions of the ``neural`` renderer engine (``nn.Module`` only).

Nothing here reads configuration, picks a device or loads a checkpoint: the engine wrapper
(``avatarflow_renderer.engines.neural``) owns that. ``liveportrait`` reproduces LivePortrait's
published modules parameter for parameter; ``upperbody`` builds ChatAnyone's upper-body
renderer from the same parts.
"""
