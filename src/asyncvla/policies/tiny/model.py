"""The tiny VLA: a CNN trained from scratch, a frozen sentence embedding and proprio feed a
small transformer trunk; action heads read learned query tokens, a value head the pooled trunk.

tokens = [image patches ceil(S/16)^2 per camera of policy.cameras | instruction | proprio | action queries]
(the cameras share the encoder; the learned positions tell their patches apart)
- `tiny`: one query per (step, action dim) of the chunk, each predicting one of
  `action_bins` bins over [-1, 1] (OpenVLA-style action tokens, decoded in parallel), with
  ordinally parametrised logits (`ordinal_logits`).
  Chunk logprob = sum of the K*A token logprobs; entropy = sum of token entropies.
- `tiny-gaussian`: one query per step of the chunk predicting the mean of a diagonal
  Gaussian (no tanh, so the logprob is exact); log std is a learned state-independent
  parameter per (step, dim).
Both are small enough to train in minutes on two CPU cores.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from asyncvla.policies import text
from asyncvla.policies.base import ActOut, ObsBatch, Policy
from asyncvla.policies.registry import register
from asyncvla.policies.tiny.config import TinyConfig, TinyGaussianConfig, TinyTrunkConfig
from asyncvla.policies.processor import bin_centers
from asyncvla.policies.tokens import TokenActions, ordinal_logits
from asyncvla.policies.tiny.processor import TinyProcessor

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def gaussian_logprob_entropy(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunk logprob and entropy of a diagonal Gaussian.

    mean [B, K, A], log_std broadcastable to it, actions [B, K, A] -> (logprob [B], entropy [B]).
    """
    log_std = log_std.expand_as(mean)
    z = (actions - mean) * torch.exp(-log_std)
    lp = -0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)  # [B, K, A]
    ent = 0.5 + 0.5 * math.log(2 * math.pi) + log_std  # [B, K, A]
    return lp.sum((1, 2)), ent.sum((1, 2))


class ImageEncoder(nn.Module):
    """[B, 3, S, S] -> [B, ceil(S/16)^2, H] patch tokens.

    A 4x4 patchify stem then two stride-2 convs: ~10x cheaper on a CPU than four stride-2
    3x3 convs from full resolution, at the same token grid.
    """

    def __init__(self, hidden_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 4, stride=4), nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(64, hidden_dim, 3, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(2).transpose(1, 2)  # [B, h*w, H]


def _zero_linear(n_in: int, n_out: int) -> nn.Linear:
    """A Linear with zero weights drawn from no RNG: every copy of the policy adds it identically,
    the other modules' initialisation is unchanged, and the critic starts without its input."""
    lin = nn.utils.skip_init(nn.Linear, n_in, n_out)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


class TinyBase(Policy):
    """Shared trunk, processor and value head; subclasses add an action head."""

    def __init__(self, cfg: TinyTrunkConfig, action_dim: int, proprio_dim: int, num_queries: int):
        super().__init__()
        self.freeze_spread = False
        """Set by the RL trainer from policy.rl_spread (SFT always trains the spread)."""
        self.cfg = cfg
        self.chunk, self.action_dim, self.proprio_dim = cfg.chunk, action_dim, proprio_dim
        # act and evaluate both use it: the trainer must score the distribution rollouts sampled from.
        self.temperature = cfg.temperature
        h = cfg.hidden_dim
        self.processor = TinyProcessor(proprio_dim, action_dim, cfg.image_size, cfg.proprio_std_min)
        self.image_encoder = ImageEncoder(h)
        num_patches = self.image_encoder(torch.zeros(1, 3, cfg.image_size, cfg.image_size)).shape[1] * len(cfg.cameras)
        self.text_proj = nn.Linear(text.DIM, h)
        self.proprio_proj = nn.Sequential(nn.Linear(proprio_dim, h), nn.GELU(), nn.Linear(h, h))
        self.queries = nn.Parameter(0.02 * torch.randn(num_queries, h))
        self.num_obs_tokens = num_patches + 2
        self.pos = nn.Parameter(0.02 * torch.randn(self.num_obs_tokens + num_queries, h))
        layer = nn.TransformerEncoderLayer(h, cfg.num_heads, dim_feedforward=2 * h, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.trunk = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(h)
        self.value_head = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, 1))
        self.value_time: nn.Linear | None = _zero_linear(1, h) if cfg.value_time else None
        self.value_state: nn.Linear | None = _zero_linear(proprio_dim, h) if cfg.value_state else None

    @property
    def device(self) -> torch.device:
        return self.queries.device

    def prepare_rl(self, cfg: TinyTrunkConfig) -> None:
        self.freeze_spread = not cfg.rl_spread
        # The critic's own inputs: added at zero weight to a checkpoint that lacks them.
        if cfg.value_time and self.value_time is None:
            self.value_time = _zero_linear(1, self.cfg.hidden_dim).to(self.device)
        if cfg.value_state and self.value_state is None:
            self.value_state = _zero_linear(self.proprio_dim, self.cfg.hidden_dim).to(self.device)
        # Saved checkpoints rebuild them.
        self.cfg = dataclasses.replace(self.cfg, value_time=self.value_time is not None, value_state=self.value_state is not None)

    def value(self, pooled: torch.Tensor, obs: ObsBatch, proprio: torch.Tensor) -> torch.Tensor:
        """V [B] from the pooled trunk [B, H], plus the normalised proprio [B, P] (policy.value_state)
        and the time left (policy.value_time) when the critic reads them."""
        x = pooled
        if self.value_state is not None:
            x = x + self.value_state(proprio)
        if self.value_time is None:
            return self.value_head(x).squeeze(-1)
        tau = torch.ones(pooled.shape[0], device=pooled.device) if obs.time_left is None else \
            torch.as_tensor(obs.time_left, dtype=pooled.dtype, device=pooled.device)
        return tau * self.value_head(x + self.value_time(tau[:, None])).squeeze(-1)

    def features(self, obs: ObsBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(query outputs [B, Q, H], value [B])."""
        images, proprio, instr = self.processor(obs, self.cfg.cameras)
        b = proprio.shape[0]
        patches = self.image_encoder(images)  # [C*B, n, H]
        tokens = torch.cat([
            torch.cat(patches.split(b), dim=1),  # [B, C*n, H]
            self.text_proj(instr).unsqueeze(1),  # [B, 1, H]
            self.proprio_proj(proprio).unsqueeze(1),  # [B, 1, H]
            self.queries.expand(b, -1, -1),  # [B, Q, H]
        ], dim=1) + self.pos
        out = self.norm(self.trunk(tokens))
        pooled = out[:, : self.num_obs_tokens].mean(1)  # [B, H]
        if self.cfg.detach_value:
            pooled = pooled.detach()
        return out[:, self.num_obs_tokens :], self.value(pooled, obs, proprio.detach() if self.cfg.detach_value else proprio)


@register("tiny")
class TinyVLA(TokenActions, TinyBase):
    """Discrete action tokens: `action_bins` bins per dimension over [-1, 1], K*A tokens per chunk."""

    def __init__(self, cfg: TinyConfig, action_dim: int, proprio_dim: int):
        super().__init__(cfg, action_dim, proprio_dim, num_queries=cfg.chunk * action_dim)
        self.num_bins = cfg.action_bins
        self.action_head = nn.Linear(cfg.hidden_dim, 2 + cfg.action_bins)  # see ordinal_logits
        self.register_buffer("centers", bin_centers(cfg.action_bins), persistent=False)

    def logits(self, obs: ObsBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, K, A, N] at temperature 1, value [B])."""
        q, value = self.features(obs)
        logits = ordinal_logits(self.action_head(q), self.centers, self.freeze_spread)  # [B, K*A, N]
        return logits.view(-1, self.chunk, self.action_dim, self.num_bins), value



@register("tiny-gaussian")
class TinyGaussianVLA(TinyBase):
    """Diagonal Gaussian over the chunk (no tanh; the env clips): mean per step from a query
    token, in units of the demo action statistics; state-independent learned log std."""

    def __init__(self, cfg: TinyGaussianConfig, action_dim: int, proprio_dim: int):
        super().__init__(cfg, action_dim, proprio_dim, num_queries=cfg.chunk)
        self.mean_head = nn.Linear(cfg.hidden_dim, action_dim)
        self.log_std = nn.Parameter(torch.full((cfg.chunk, action_dim), -0.5))

    def dist_params(self, obs: ObsBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean [B, K, A], log std [K, A] at the current temperature, value [B])."""
        q, value = self.features(obs)
        p = self.processor
        mean = p.action_mean + p.action_std * self.mean_head(q)  # [B, K, A]
        log_std = self.log_std.detach() if self.freeze_spread else self.log_std
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX) + torch.log(p.action_std) + math.log(self.temperature)
        return mean, log_std, value

    @torch.no_grad()
    def act(self, obs: ObsBatch, deterministic: bool = False) -> ActOut:
        mean, log_std, value = self.dist_params(obs)
        actions = mean if deterministic else mean + self._noise(obs, mean.shape, "normal") * log_std.exp()
        logprob, _ = gaussian_logprob_entropy(mean, log_std, actions)
        return ActOut(actions.float().cpu().numpy(), logprob.float().cpu().numpy(), value.float().cpu().numpy(), self.version)

    def evaluate(self, obs: ObsBatch, actions: torch.Tensor, aux: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, log_std, value = self.dist_params(obs)
        logprob, entropy = gaussian_logprob_entropy(mean, log_std, self._as_actions(actions))
        return logprob, entropy, value
