"""EnvManager helpers: how ready envs are cut into inference requests."""

from asyncvla.runtime.env_manager import split_request


def test_ready_envs_are_cut_into_requests_of_at_most_the_server_batch():
    assert split_request([3, 1, 4, 0, 2], 2) == [[3, 1], [4, 0], [2]]  # order kept, nothing lost
    assert split_request([5, 6], 1) == [[5], [6]]  # no dynamic batching: each env alone
    assert split_request([0, 1, 2], None) == [[0, 1, 2]]  # no cap: one request
    assert split_request([0, 1], 8) == [[0, 1]]
    assert split_request([], 2) == []
