"""lowbit.pipeline.stats.group_by_call_order: the one call-order grouping of the data-aware walks."""

from lowbit.pipeline.stats import group_by_call_order


def test_consecutive_readers_of_one_tensor_share_a_group():
    calls = [("q", 1), ("k", 1), ("v", 1), ("o", 2), ("gate", 3), ("up", 3), ("down", 4), ("q", 1)]
    assert group_by_call_order(calls, ["q", "k", "v", "o", "gate", "up", "down", "head"]) == [
        ["q", "k", "v"], ["o"], ["gate", "up"], ["down"], ["head"]]  # head never called: a last group


def test_alone_layers_never_share_and_repeats_do_not_regroup():
    calls = [("lstm", 1), ("fc", 1), ("fc2", 1), ("lstm", 1)]
    # fc may not join lstm's group; fc2 may join fc's (only the alone layer itself starts a group)
    assert group_by_call_order(calls, ["lstm", "fc", "fc2"], alone={"fc"}) == [["lstm"], ["fc", "fc2"]]
    assert group_by_call_order([], ["a", "b"]) == [["a", "b"]]


def test_recon_rules_repeats_move_the_last_key_and_uncalled_layers_stand_alone():
    calls = [("q", 1), ("k", 1), ("q", 2), ("v", 2)]  # q called again on v's input just before v
    layers = ["q", "k", "v", "a", "b"]
    assert group_by_call_order(calls, layers) == [["q", "k"], ["v"], ["a", "b"]]
    assert group_by_call_order(calls, layers, uncalled_alone=True, repeats_set_last=True) == [
        ["q", "k", "v"], ["a"], ["b"]]
