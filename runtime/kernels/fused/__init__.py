"""The Triton implementations (importing this package needs Triton).

Kept in a subpackage so that `runtime.kernels.rms_norm` stays the dispatching function
rather than being shadowed by a submodule of the same name.
"""
