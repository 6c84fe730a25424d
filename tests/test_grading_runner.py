"""The runner's data format: what crosses the sandbox's boundary. A PatchScore (the one score
function an exercise may take) travels as its tensors and comes back computing the same scores;
nothing else decodes to anything that runs."""

import json

import pytest
import torch

from medsight_lab.grading.runner import (Opaque, PatchScore, decode, encode, pack, tensors,
                                         unpack)


def _score(N=5, D=4, K=3, seed=0, square=0.25):
    g = torch.Generator().manual_seed(seed)
    return PatchScore(torch.randn(D, K, generator=g), torch.randn(K, generator=g),
                      torch.rand(N, generator=g) + 0.5, square)


def _through_the_boundary(value):
    """`value` encoded, packed into bytes (as the runner's frames are), unpacked and decoded."""
    arrays = {}
    tree = encode(value, arrays, "x")
    return decode(*unpack(pack(tree, arrays)))


def test_a_patch_score_computes_its_formula():
    score = _score()
    P = torch.randn(2, 5, 4)
    by_patch = [score.scale[n] * (torch.tanh(P[:, n] @ score.W) @ score.v
                                  + score.square * P[:, n].pow(2).sum(-1)) for n in range(5)]
    assert torch.allclose(score(P), torch.stack(by_patch).sum(0))
    assert score(P).shape == (2,)


def test_a_patch_of_scale_zero_counts_for_nothing():
    score = _score()
    score.scale[2] = 0.0
    P = torch.randn(3, 5, 4, requires_grad=True)
    score(P).sum().backward()
    assert torch.all(P.grad[:, 2] == 0) and torch.all(P.grad[:, [0, 1, 3, 4]] != 0)


def test_a_patch_score_round_trips_through_encode_and_decode():
    score = _score(square=3)                                   # an int square is a number too
    back = _through_the_boundary([torch.ones(2), (score, 1.5)])
    copy = back[1][0]
    assert type(copy) is PatchScore and copy is not score
    assert all(torch.equal(a, b) for a, b in zip(tensors(copy), tensors(score)))
    assert copy.square == 3.0
    P = torch.randn(4, 5, 4)
    assert torch.equal(copy(P), score(P))
    assert tensors(back) == [back[0], *tensors(copy)]         # the in-place check sees them


class _Callable:
    def __call__(self, patches):
        return patches.sum((1, 2))


@pytest.mark.parametrize("value", [
    lambda patches: patches.sum((1, 2)), print, _Callable(), _Callable, torch.nn.Linear(2, 2),
    torch.sum, "os.system", b"bytes", {"a": 1}, type("PatchScore", (), {})(),
])
def test_no_other_callable_or_object_decodes_to_anything_runnable(value):
    back = _through_the_boundary([value])[0]
    assert isinstance(back, Opaque) and not callable(back)


@pytest.mark.parametrize("tree, words", [
    ({"callable": {"name": "os.system", "args": {"list": []}}}, "not an encoded score function"),
    ({"callable": "patch_score"}, "not an encoded score function"),
    ({"callable": {"name": "patch_score", "args": {"list": []}, "code": "x"}},
     "not an encoded score function"),
    ({"callable": {"name": "patch_score", "args": {"list": [{"value": 1.0}]}}},
     "4 arguments"),
    ({"callable": {"name": "patch_score", "args": {"tuple": [{"value": 1.0}] * 4}}},
     "4 arguments"),
    ({"callable": {"name": "patch_score", "args": {"list": [{"value": 1.0}] * 4}}},
     "W must be a 2-d float tensor"),
    ({"callable": {"name": "patch_score", "args": {"list": [
        {"tensor": "w"}, {"tensor": "v"}, {"tensor": "s"}, {"value": True}]}}},
     "square must be a finite number"),
    ({"callable": {"name": "patch_score", "args": {"list": [
        {"tensor": "w"}, {"tensor": "s"}, {"tensor": "s"}, {"value": 1.0}]}}},
     "W (D, K) and v (K,) disagree"),
    ({"function": "print"}, "unknown kind"),
])
def test_a_forged_encoding_is_refused(tree, words):
    arrays = {"w": torch.zeros(4, 3).numpy(), "v": torch.zeros(3).numpy(),
              "s": torch.zeros(5).numpy()}
    tree, arrays = unpack(pack(json.loads(json.dumps(tree)), arrays))
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        decode(tree, arrays)


@pytest.mark.parametrize("args, words", [
    ((torch.zeros(4), torch.zeros(3), torch.zeros(5)), "W must be a 2-d float tensor"),
    ((torch.zeros(4, 3, dtype=torch.long), torch.zeros(3), torch.zeros(5)), "W must be"),
    ((torch.zeros(4, 3), torch.zeros(2), torch.zeros(5)), "disagree"),
    ((torch.zeros(4, 3), torch.zeros(3), [1.0] * 5), "scale must be a 1-d float tensor"),
    ((torch.zeros(4, 3), torch.zeros(3), torch.zeros(5), float("nan")), "finite number"),
])
def test_a_patch_score_refuses_bad_data(args, words):
    with pytest.raises(ValueError, match=words):
        PatchScore(*args)


def test_a_patch_score_says_which_patches_it_expects():
    score = _score()
    with pytest.raises(ValueError, match=r"expects patches of shape \(B, 5, 4\)"):
        score(torch.zeros(2, 6, 4))
    with pytest.raises(ValueError, match="expects patches"):
        score(torch.zeros(5, 4))
    assert score(torch.zeros(2, 5, 4, dtype=torch.float64)).dtype == torch.float64
    assert repr(score) == "PatchScore(N=5, D=4, K=3, square=0.25)"


def test_the_folders_on_the_way_to_a_mount_inside_the_private_tmp_are_made_passable():
    """A checkout under /tmp (CI's clone): its virtualenv is bound inside the sandbox's private
    /tmp, so bwrap must make /tmp/fresh there, passable by the sandbox's uid; folders inside
    another bind are the real ones, and /tmp itself is the tmpfs."""
    from medsight_lab.grading.sandbox import _folders_on_the_way
    found = _folders_on_the_way(["/usr", "/usr/lib/python3/dist", "/tmp/fresh/.venv",
                                 "/root/.pyenv/versions/3.11", "/runner/runner.py"],
                                mounts=["/tmp"])
    assert [str(f) for f in found] == ["/tmp/fresh", "/root", "/root/.pyenv",
                                       "/root/.pyenv/versions", "/runner"]
