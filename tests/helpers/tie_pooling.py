"""A torch masked MAX pooling that breaks ties the other way, for the near-tie tests of validate
(tests/validation/test_near_ties.py): in the test's process by monkeypatch, in a validate child process
through a ``sitecustomize`` that calls :func:`install`."""
from __future__ import annotations

from typing import Any, Callable


def perturbed_forward(real: Callable[..., Any], eps: float) -> Callable[..., Any]:
    """``CaffeMaxPoolWithMask.forward`` choosing its cell on ``x + eps * (position in the 2x2 window)``:
    among exact ties (small ``eps``) it takes the last cell; the values it returns are its input's at
    that cell."""
    import torch

    def forward(self: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = x.shape[-2:]
        ramp = ((torch.arange(h) % 2)[:, None] * 2 + (torch.arange(w) % 2)[None, :]).to(x.dtype)
        _, mask = real(self, x + eps * ramp)
        y = torch.gather(x.flatten(2), 2, mask.flatten(2).long()).reshape(mask.shape)
        return y, mask

    return forward


def install(eps: float) -> None:
    """Patch the class for the whole process (a child's ``sitecustomize``)."""
    from caffe2x.targets.torch.resample import CaffeMaxPoolWithMask

    CaffeMaxPoolWithMask.forward = perturbed_forward(CaffeMaxPoolWithMask.forward, eps)  # type: ignore[method-assign]
