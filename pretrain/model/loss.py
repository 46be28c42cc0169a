"""The language-modelling loss: next-token cross-entropy through the readout, without the micro batch's fp32
logits.

The plain path materializes the logits of every token, B·T·V fp32 numbers (1 GiB for 4 × 2048 tokens of a
32000 vocabulary), their log-softmax and, in the backward, their gradient: the largest activations of a step.
`chunked_cross_entropy` takes the hidden states instead and works through them a chunk of tokens at a time:
logits, log-sum-exp and loss, and, since the loss ends the graph, in the same pass the chunk's gradients of the
hidden states and the readout weight (softmax − one-hot, over the token count). Only one chunk's logits ever
exist; the backward just scales the saved gradients by the incoming one. The arithmetic is the plain path's:
logits in the input dtype upcast to fp32, the mean over tokens, low-precision matmuls for the gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lm_loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over a packed batch (B, T+1): inputs row[:-1], targets row[1:]."""
    return model(batch[:, :-1], batch[:, 1:])


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The plain path: mean cross-entropy of logits (..., V) against targets (...), upcast to fp32."""
    return F.cross_entropy(logits.float().flatten(0, -2), targets.flatten())


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                          chunk: int) -> torch.Tensor:
    """cross_entropy(hidden @ weightᵀ, targets) with at most `chunk` tokens' logits at a time.
    hidden (..., d), weight (V, d), targets (...): the mean over all tokens."""
    hidden, targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _ChunkedCrossEntropy.apply(hidden, weight, targets, chunk)
    return _chunked_loss_and_grads(hidden, weight, targets, chunk, grads=False)[0]


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk: int) -> torch.Tensor:
        loss, *ctx.grads = _chunked_loss_and_grads(hidden, weight, targets, chunk, grads=True)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        # Handed over, not saved: the graph lets go of them here, so autograd can take the weight's gradient as
        # its .grad without a copy. Scaled in place: they serve this one backward.
        grad_hidden, grad_weight = ctx.grads
        del ctx.grads
        return grad_hidden.mul_(grad_loss), grad_weight.mul_(grad_loss), None, None


def _chunked_loss_and_grads(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int,
                            grads: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The mean loss and, with `grads`, its gradients for hidden (N, d) and weight (V, d), chunk by chunk."""
    n = hidden.shape[0]
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    grad_hidden = torch.empty_like(hidden) if grads else None
    grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if grads else None
    for start in range(0, n, chunk):
        h, t = hidden[start:start + chunk], targets[start:start + chunk]
        logits = (h @ weight.t()).float()  # (c, V): the only logits alive
        lse = torch.logsumexp(logits, dim=-1)
        total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
        if grads:
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            probs[torch.arange(len(t), device=t.device), t] -= 1.0
            grad_logits = probs.div_(n).to(hidden.dtype)  # d(mean loss)/d(logits), in the matmuls' dtype
            torch.matmul(grad_logits, weight, out=grad_hidden[start:start + chunk])
            if grad_weight.dtype == h.dtype:
                grad_weight.addmm_(grad_logits.t(), h)  # no (V, d) temporary
            else:  # low precision: the matmul in its dtype, accumulated over chunks in fp32
                grad_weight.add_(grad_logits.t() @ h)
    return total / n, grad_hidden, grad_weight.to(weight.dtype) if grads else None
