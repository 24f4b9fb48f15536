"""GRPO groups in the async runtime: envs that start from one initial state and are scored together.

A group is `group_size` consecutive envs of one env manager. Each member plays one whole
episode as one segment. When every member has finished, the manager emits the group's
segments together, tagged with the group id, and restarts the members from one new shared
seed (equal seeds, equal initial states). There is no barrier across groups: a group waits
only for its own members, as GRPO needs. A member whose episode was cut by an env error
spoils its round: the others' segments are dropped and counted, not trained on.

On the trainer side `GroupBuffer` reassembles groups from the trajectory queue, where
segments of different managers interleave, and hands out whole groups only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asyncvla.config import ConfigError
from asyncvla.runtime.data import Segment


def group_seed(env_seed: int, group: int, round: int) -> int:
    """Reset seed of every member of global GRPO group `group` (envs group*size .. group*size+size-1)
    in its round `round`: the one formula of both modes, so their groups start from the same states."""
    return ((env_seed * 1_000_003 + group) * 100_003 + round) % (2**63)


def make_groups(num_envs: int, group_size: int, manager_index: int, seed: int, first_env: int = 0) -> "EnvGroups | None":
    """The manager's GRPO groups, or None when group_size is 0 (PPO)."""
    return EnvGroups(num_envs, group_size, manager_index, seed, first_env) if group_size else None


class EnvGroups:
    """Book-keeping of one manager's groups: who has finished this round, and the next shared seed."""

    def __init__(self, num_envs: int, group_size: int, manager_index: int, seed: int, first_env: int = 0):
        if group_size < 2 or num_envs % group_size or first_env % group_size:
            raise ConfigError(f"algo.group_size={group_size!r} is invalid: must be >= 2 and divide the envs of each "
                              f"env manager ({num_envs})")
        self.group_size = group_size
        self.manager_index = manager_index
        self.seed = seed
        self.first_group = first_env // group_size
        n = num_envs // group_size
        self.round = [0] * n
        self._finished: list[dict[int, Segment | None]] = [{} for _ in range(n)]

    def group_of(self, env: int) -> int:
        return env // self.group_size

    def members(self, group: int) -> list[int]:
        return list(range(group * self.group_size, (group + 1) * self.group_size))

    def tag(self, group: int) -> tuple[int, int, int]:
        """(manager, group, round): unique per round, so the trainer can reassemble it."""
        return (self.manager_index, group, self.round[group])

    def round_seed(self, group: int) -> int:
        """Seed of the group's current round (`group_seed` of its global group id)."""
        return group_seed(self.seed, self.first_group + group, self.round[group])

    def finish(self, env: int, seg: Segment | None) -> tuple[int, list[Segment], bool] | None:
        """Records `env`'s finished episode (None: cut by an env error).

        Once every member has finished, returns (group, its finished segments in member order,
        spoiled: whether a member's episode was cut) and opens the group's next round;
        otherwise None.
        """
        g = self.group_of(env)
        if env in self._finished[g]:
            raise RuntimeError(f"env {env} finished twice in round {self.round[g]} of group {g}")
        if seg is not None:
            seg.group = self.tag(g)
        self._finished[g][env] = seg
        if len(self._finished[g]) < self.group_size:
            return None
        done, self._finished[g] = self._finished[g], {}
        self.round[g] += 1
        segs = [done[i] for i in self.members(g)]
        return g, [x for x in segs if x is not None], any(x is None for x in segs)

    def held(self) -> list[Segment]:
        """Finished segments of incomplete rounds (dropped at shutdown)."""
        return [s for d in self._finished for s in d.values() if s is not None]


@dataclass
class GroupBuffer:
    """Trainer side: segments in, whole groups out (in the order they completed)."""

    group_size: int
    _pending: dict[tuple, list[Segment]] = field(default_factory=dict)
    groups: list[list[Segment]] = field(default_factory=list)
    """Complete groups, oldest first."""

    def add(self, seg: Segment) -> bool:
        """Adds one segment; True when it completed its group."""
        if seg.group is None:
            raise ValueError(f"GRPO needs whole-episode segments tagged with their group; env {seg.env_id}'s is not")
        members = self._pending.setdefault(seg.group, [])
        members.append(seg)
        if len(members) < self.group_size:
            return False
        self.groups.append(sorted(self._pending.pop(seg.group), key=lambda s: s.env_id))
        return True

    @property
    def samples(self) -> int:
        """Decisions in complete groups."""
        return sum(len(s) for g in self.groups for s in g)

    @property
    def pending_samples(self) -> int:
        """Decisions in groups still waiting for members."""
        return sum(len(s) for m in self._pending.values() for s in m)

    def take(self, n: int) -> list[Segment]:
        """Whole groups, oldest first, until at least `n` decisions (never splits a group)."""
        out: list[Segment] = []
        while self.groups and sum(map(len, out)) < n:
            out += self.groups.pop(0)
        return out

    def drain(self) -> list[Segment]:
        """Every segment held, complete groups or not."""
        out = [s for g in self.groups for s in g] + [s for m in self._pending.values() for s in m]
        self.groups, self._pending = [], {}
        return out
