"""`flow`: a π0-style flow-matching VLA built from `transformers` parts.

Prefix (the VLM, computed once per observation): [vision patches per camera (SigLIP -> projector)
| instruction tokens] through a Llama decoder with bidirectional attention over the valid
prefix (π0's prefix). Action expert: a smaller transformer over [state token | K action tokens]
whose layers self-attend within that suffix and cross-attend to the prefix's hidden states,
giving a velocity per action token. Actions live in units of the demo statistics
(x = (a - mean) / std), noise at t = 1, data at t = 0, and SFT regresses the velocity
u = noise - x at x_t = t * noise + (1 - t) * x (π0's flow-matching loss).

Sampling integrates N Euler steps from x_0 ~ N(0, I) at t = 1: x_{k+1} = x_k - v(x_k, t_k) / N.
For RL every step also adds Gaussian noise of a learned std per step (Flow-Noise, πRL), so the
chain is a product of Gaussians and the chunk logprob is exact:

    log p = log N(x_0; 0, I) + sum_k log N(x_{k+1}; x_k - v(x_k, t_k) / N, sigma_k^2 I)

The chain [N + 1, K, A] travels with the sample as `ActOut.aux`; `evaluate` re-scores it, all N
velocities in one batched pass of the expert. Deterministic mode (sigma = 0) returns the ODE
solution. The executed chunk is x_N in action units.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from asyncvla.policies.base import ActOut, ObsBatch
from asyncvla.policies.flow.config import FlowConfig
from asyncvla.policies.hf import HFVLA, mlp, prefix_mask
from asyncvla.policies.registry import register

LOG_2PI = math.log(2 * math.pi)
LOG_NOISE_MIN, LOG_NOISE_MAX = math.log(1e-3), 0.0


def gaussian_chain_logprob(chain: torch.Tensor, means: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Exact log density [B] of chains [B, N + 1, ...]: x_0 ~ N(0, I), x_{k+1} ~ N(means[:, k], exp(log_std[k])^2 I).

    means [B, N, ...]: the mean of each transition; log_std [N]."""
    x0 = chain[:, 0].flatten(1)
    prior = -0.5 * (x0.pow(2) + LOG_2PI).sum(1)
    shape = (1, -1) + (1,) * (chain.dim() - 2)
    z = (chain[:, 1:] - means) * torch.exp(-log_std).view(shape)
    steps = (-0.5 * z.pow(2) - log_std.view(shape) - 0.5 * LOG_2PI).flatten(1).sum(1)
    return prior + steps


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [..., dim] of times t [...] in [0, 1] (periods from 4e-3 to 4: π0's range)."""
    half = dim // 2
    freqs = torch.exp(torch.linspace(math.log(2 * math.pi / 4.0), math.log(2 * math.pi / 4e-3), half, device=t.device))
    angles = t[..., None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


@register("flow")
class FlowVLA(HFVLA):
    def __init__(self, cfg: FlowConfig, action_dim: int, proprio_dim: int):
        super().__init__(cfg, action_dim, proprio_dim)
        head = self.language_model.get_output_embeddings()
        if head is not None and head.weight is not self.language_model.get_input_embeddings().weight:
            head.requires_grad_(False)  # π0 never reads the LM head: no optimizer state, never published
        e = cfg.expert_dim
        self.memory_proj = nn.Linear(self.hidden_dim, e)
        self.state_proj = mlp(proprio_dim, e)
        self.action_in = nn.Linear(action_dim, e)
        self.time_mlp = mlp(2 * e, e)  # [action embedding | time embedding] -> token (π0's action-time MLP)
        self.expert_pos = nn.Parameter(0.02 * torch.randn(1 + cfg.chunk, e))
        layer = nn.TransformerDecoderLayer(e, cfg.expert_heads, dim_feedforward=2 * e, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.expert = nn.TransformerDecoder(layer, cfg.expert_layers)
        self.expert_norm = nn.LayerNorm(e)
        self.velocity_out = nn.Linear(e, action_dim)
        self.noise_log_std = nn.Parameter(torch.full((cfg.num_steps,), math.log(cfg.noise_std)))
        """log sigma_k of each denoising step's noise (RL; SFT does not train it)."""

    # -- the two networks -----------------------------------------------------------------
    def prefix(self, obs: ObsBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(expert memory [B, n, E], its padding mask [B, n] (True: padding), value [B])."""
        prompt, valid = self.prompt(obs)
        hidden = self.decode(prompt, prefix_mask(valid, 0, causal=False))
        return self.memory_proj(hidden), ~valid, self.value(hidden, valid)

    def velocity(self, obs: ObsBatch, memory: torch.Tensor, pad: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v [M, K, A] at noisy chunks x [M, K, A] (normalised units), times t [M]; rows of memory/pad/proprio
        repeat every B rows (M = B * r: r chunks per observation, as in `evaluate`)."""
        b = memory.shape[0]
        r = x.shape[0] // b
        state = self.state_proj(self.processor.proprio(obs.proprio))[:, None]  # [B, 1, E]
        tokens = self.time_mlp(torch.cat([self.action_in(x), time_embedding(t, self.cfg.expert_dim)[:, None].expand(
            -1, self.chunk, -1)], dim=-1))  # [M, K, E]
        seq = torch.cat([state.repeat(r, 1, 1), tokens], dim=1) + self.expert_pos
        out = self.expert(seq, memory.repeat(r, 1, 1), memory_key_padding_mask=pad.repeat(r, 1))
        return self.velocity_out(self.expert_norm(out[:, 1:]))

    def _log_std(self) -> torch.Tensor:
        return self.noise_log_std.clamp(LOG_NOISE_MIN, LOG_NOISE_MAX)

    def _times(self, device) -> torch.Tensor:
        """t_k of the N steps [N]: 1, 1 - 1/N, ..., 1/N."""
        n = self.cfg.num_steps
        return 1.0 - torch.arange(n, device=device, dtype=torch.float32) / n

    def _to_actions(self, x: torch.Tensor) -> torch.Tensor:
        return self.processor.action_mean + self.processor.action_std * x

    # -- the RL interface -----------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: ObsBatch, deterministic: bool = False) -> ActOut:
        memory, pad, value = self.prefix(obs)
        b, n = len(obs), self.cfg.num_steps
        shape = (b, n + 1, self.chunk, self.action_dim)
        noise = self._noise(obs, torch.Size(shape), "normal")  # [B, N + 1, K, A]: x_0, then each step's noise
        std = self._log_std().exp() * self.temperature
        x = noise[:, 0]
        chain, means = [x], []
        for k, t in enumerate(self._times(memory.device)):
            mean = x - self.velocity(obs, memory, pad, x, t.expand(b)) / n
            x = mean if deterministic else mean + std[k] * noise[:, k + 1]
            chain.append(x)
            means.append(mean)
        chain_t, means_t = torch.stack(chain, 1), torch.stack(means, 1)
        logprob = gaussian_chain_logprob(chain_t, means_t, torch.log(std))
        return ActOut(self._to_actions(x).float().cpu().numpy(), logprob.float().cpu().numpy(), value.float().cpu().numpy(),
                      self.version, aux=chain_t.float().cpu().numpy())

    def evaluate(self, obs: ObsBatch, actions: torch.Tensor, aux: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logprob, entropy, value) [B] of the denoising chains `aux` [B, N + 1, K, A] that `act` sampled."""
        if aux is None:
            raise ValueError("flow policy: evaluate needs the denoising chain (ActOut.aux) of each sample")
        memory, pad, value = self.prefix(obs)
        b, n = aux.shape[0], self.cfg.num_steps
        x = aux[:, :-1].transpose(0, 1).reshape(n * b, self.chunk, self.action_dim)  # step-major: row k*B + i
        t = self._times(aux.device).repeat_interleave(b)
        v = self.velocity(obs, memory, pad, x, t).view(n, b, self.chunk, self.action_dim).transpose(0, 1)
        log_std = self._log_std() + math.log(self.temperature)
        logprob = gaussian_chain_logprob(aux, aux[:, :-1] - v / n, log_std)
        # Entropy of the chain's transitions (the prior's is a constant): sum_k K*A*(1/2 log(2 pi e) + log sigma_k).
        entropy = (self.chunk * self.action_dim * (0.5 * (1 + LOG_2PI) + log_std)).sum().expand(b)
        return logprob, entropy, value

    def sft_loss(self, obs: ObsBatch, targets: torch.Tensor) -> torch.Tensor:
        """π0's flow-matching loss: mean squared error of the velocity at x_t = t * noise + (1 - t) * x."""
        memory, pad, _ = self.prefix(obs)
        x = (targets - self.processor.action_mean) / self.processor.action_std
        noise = torch.randn_like(x)
        t = torch.rand(x.shape[0], device=x.device)
        x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * x
        return (self.velocity(obs, memory, pad, x_t, t) - (noise - x)).pow(2).mean()
