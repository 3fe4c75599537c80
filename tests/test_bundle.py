"""Signed bundles: build, verify, extract, and every attack the format must refuse.

Tests are named after what they defend against. Each refusal must be one line that
says what was wrong, and must write nothing outside the extraction target.
"""

from __future__ import annotations

import json
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_agent.contract.bundle import BundleLimits, extract_bundle, inspect_bundle, verify_bundle
from edge_agent.contract.canonical import canonical_bytes
from edge_agent.contract.manifest import MANIFEST, MODEL, SIGNATURES
from edge_agent.contract.trust import Context, TrustRoot
from edge_agent.errors import BundleError
from edge_agent.inference.model import LoadedModel
from hub.bundler import ReferenceData, build_bundle
from hub.errors import BuildError
from hub.signing import sign

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def reference(demo_dir: Path) -> ReferenceData:
    with np.load(demo_dir / "reference.npz") as data:
        x = np.asarray(data["x"], dtype=np.float64)
    return ReferenceData(x, tuple(f"f{i}" for i in range(x.shape[1])))


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory, demo_dir, reference, signing_keys) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "good.efb"
    build_bundle(
        (demo_dir / "model-int8.tflite").read_bytes(),
        name="pump",
        version=3,
        reference=reference,
        keys=signing_keys[:2],
        out=out,
        lineage={"run": "abc123"},
    )
    return out


def members_of(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def write_zip(path: Path, members: list[tuple[zipfile.ZipInfo | str, bytes]], **kw) -> Path:
    with zipfile.ZipFile(path, "w", **kw) as zf:
        for info, data in members:
            zf.writestr(info, data)
    return path


def resigned(members: dict[str, bytes], manifest_doc: dict, keys) -> dict[str, bytes]:
    """Members with a new manifest, validly signed (for attacks past the signature check)."""
    manifest = canonical_bytes(manifest_doc)
    sigs = sign(Context.BUNDLE_MANIFEST, manifest, keys)
    return {
        **members,
        MANIFEST: manifest,
        SIGNATURES: canonical_bytes([s.to_json() for s in sigs]),
    }


def variant(tmp_path: Path, good: Path, edit: Callable[[dict[str, bytes]], None]) -> Path:
    members = members_of(good)
    edit(members)
    return write_zip(tmp_path / "variant.efb", list(members.items()))


def refused(path: Path, trust: TrustRoot, match: str, **kw) -> str:
    with pytest.raises(BundleError, match=match) as info:
        verify_bundle(path, trust, **kw)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(path.name)
    return message


# --- the good path --------------------------------------------------------------------------


def test_built_bundle_verifies_with_threshold_signatures(good_bundle, trust_2of3):
    bundle = verify_bundle(good_bundle, trust_2of3)
    m = bundle.manifest
    assert (m.name, m.version, m.lineage) == ("pump", 3, {"run": "abc123"})
    assert len(bundle.signers) == 2
    loaded = LoadedModel(bundle.read(MODEL))
    assert (m.inputs, m.outputs) == ((loaded.input,), (loaded.output,))


def test_bundle_carries_reference_schema_and_smoke_samples(good_bundle, trust_2of3, demo_dir):
    bundle = verify_bundle(good_bundle, trust_2of3)
    ref = bundle.reference()
    assert [f.name for f in ref.features] == list(bundle.input_schema().names)
    for f in ref.features:
        assert sum(f.counts) == ref.n
    assert sum(ref.class_counts) == ref.n == sum(ref.confidence.counts)
    samples = bundle.samples()
    model = LoadedModel(bundle.read(MODEL))
    got = model.predict(samples.inputs.astype(np.float32))
    assert np.max(np.abs(got - samples.expected)) <= samples.atol


def test_extract_writes_verified_members_with_tight_permissions(good_bundle, trust_2of3, tmp_path):
    dest = tmp_path / "slot"
    bundle = extract_bundle(good_bundle, trust_2of3, dest)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    assert sorted(p.name for p in dest.iterdir()) == sorted(bundle.manifest.members)
    assert (dest / MODEL).read_bytes() == bundle.read(MODEL)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in dest.iterdir())


def test_inspect_reads_without_trust_but_says_unverified(good_bundle):
    bundle = inspect_bundle(good_bundle)
    assert not bundle.verified
    assert len(bundle.signatures) == 2


# --- attacks on the archive ---------------------------------------------------------------


def test_truncated_bundle_rejected(tmp_path, good_bundle, trust_2of3):
    cut = tmp_path / "cut.efb"
    cut.write_bytes(good_bundle.read_bytes()[:-200])
    refused(cut, trust_2of3, "not a bundle")


def test_non_archive_rejected(tmp_path, trust_2of3):
    junk = tmp_path / "junk.efb"
    junk.write_bytes(b"this is not a zip file" * 10)
    refused(junk, trust_2of3, "not a bundle")


def test_absolute_path_member_rejected(tmp_path, good_bundle, trust_2of3):
    path = variant(tmp_path, good_bundle, lambda m: m.update({"/etc/evil": b"x"}))
    refused(path, trust_2of3, "absolute path")


def test_dotdot_member_rejected(tmp_path, good_bundle, trust_2of3):
    path = variant(tmp_path, good_bundle, lambda m: m.update({"../evil": b"x"}))
    refused(path, trust_2of3, r"escapes the bundle with '\.\.'")


def test_symlink_member_rejected(tmp_path, good_bundle, trust_2of3):
    members = members_of(good_bundle)
    link = zipfile.ZipInfo(MODEL)
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    entries = [(n, d) for n, d in members.items() if n != MODEL] + [(link, b"/etc/passwd")]
    refused(write_zip(tmp_path / "link.efb", entries), trust_2of3, "symbolic link")


def test_directory_member_rejected(tmp_path, good_bundle, trust_2of3):
    """A member whose mode says directory, under a member's own name and with the member's
    bytes (so every digest and signature still matches): refused, not half-extracted."""
    members = members_of(good_bundle)
    folder = zipfile.ZipInfo(MODEL)
    folder.external_attr = (stat.S_IFDIR | 0o755) << 16
    entries = [(n, d) for n, d in members.items() if n != MODEL] + [(folder, members[MODEL])]
    path = write_zip(tmp_path / "dir.efb", entries)
    refused(path, trust_2of3, f"member '{MODEL}' is a directory")
    # and a plain directory entry (trailing slash), as zip tools write them
    slash = [*members.items(), (zipfile.ZipInfo("slots/"), b"")]
    refused(write_zip(tmp_path / "slash.efb", slash), trust_2of3, "'slots/' is a directory")


def set_flag_bits(path: Path, member: str, bits: int) -> None:
    """Set general-purpose flag ``bits`` of ``member`` in the archive's bytes, in both its
    local header and its central directory entry (zipfile itself never writes the
    encryption bit)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        local = zf.getinfo(member).header_offset
    assert data[local : local + 4] == b"PK\x03\x04"
    data[local + 6] |= bits  # local header: flags at offset 6
    end = data.rfind(b"PK\x05\x06")  # end of central directory: its offset at 16
    central = int.from_bytes(data[end + 16 : end + 20], "little")
    # central directory entries: flags at 8, name length at 28
    while data[central : central + 4] == b"PK\x01\x02":
        name_len = int.from_bytes(data[central + 28 : central + 30], "little")
        if data[central + 46 : central + 46 + name_len] == member.encode():
            data[central + 8] |= bits
            break
        extra_len = int.from_bytes(data[central + 30 : central + 32], "little")
        comment_len = int.from_bytes(data[central + 32 : central + 34], "little")
        central += 46 + name_len + extra_len + comment_len
    else:
        raise AssertionError(f"no central directory entry for {member}")
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo(member).flag_bits & bits == bits


def test_encrypted_member_rejected(tmp_path, good_bundle, trust_2of3):
    """A member flagged as encrypted (its bytes left as they were, so the digests match):
    refused, since an agent cannot know what such a member decrypts to."""
    path = tmp_path / "encrypted.efb"
    path.write_bytes(good_bundle.read_bytes())
    set_flag_bits(path, MODEL, 0x1)
    refused(path, trust_2of3, f"member '{MODEL}' is encrypted")


def test_duplicate_member_names_rejected(tmp_path, good_bundle, trust_2of3):
    members = members_of(good_bundle)
    entries = [*list(members.items()), (MODEL, b"TFL3" * 10)]
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = write_zip(tmp_path / "dup.efb", entries)
    refused(path, trust_2of3, "appears twice")


def test_unexpected_extra_member_rejected(tmp_path, good_bundle, trust_2of3):
    path = variant(tmp_path, good_bundle, lambda m: m.update({"run.sh": b"rm -rf /"}))
    refused(path, trust_2of3, "unexpected member 'run.sh'")


def test_compressed_member_rejected_no_zip_bomb(tmp_path, good_bundle, trust_2of3):
    members = members_of(good_bundle)
    members[MODEL] = members[MODEL] + b"\0" * (50 << 20)  # 50 MB of zeros deflates to ~50 KB
    path = write_zip(tmp_path / "bomb.efb", list(members.items()), compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 1 << 20
    refused(path, trust_2of3, "compressed")


def test_member_over_size_limit_rejected(good_bundle, trust_2of3):
    refused(
        good_bundle,
        trust_2of3,
        "over the 1000-byte limit",
        limits=BundleLimits(max_model_bytes=1000),
    )


def test_bundle_over_size_limit_rejected(good_bundle, trust_2of3):
    refused(good_bundle, trust_2of3, "bundle limit", limits=BundleLimits(max_bundle_bytes=1000))


# --- attacks on content and signatures -----------------------------------------------------


def test_tampered_model_rejected(tmp_path, good_bundle, trust_2of3):
    def flip(m: dict[str, bytes]) -> None:
        data = bytearray(m[MODEL])
        data[len(data) // 2] ^= 0x01
        m[MODEL] = bytes(data)

    refused(variant(tmp_path, good_bundle, flip), trust_2of3, "'model.tflite' does not match")


@pytest.mark.parametrize("member", ["reference.json", "schema.json", "samples.json"])
def test_tampered_document_member_rejected(tmp_path, good_bundle, trust_2of3, member):
    path = variant(tmp_path, good_bundle, lambda m: m.update({member: m[member] + b" "}))
    refused(path, trust_2of3, f"'{member}' is .* bytes, the manifest says")


def test_manifest_changed_after_signing_rejected(tmp_path, good_bundle, trust_2of3):
    def bump(m: dict[str, bytes]) -> None:
        doc = json.loads(m[MANIFEST])
        doc["version"] = 99
        m[MANIFEST] = canonical_bytes(doc)

    refused(variant(tmp_path, good_bundle, bump), trust_2of3, "not trusted .*2 invalid")


def test_bundle_signed_by_unknown_key_rejected(tmp_path, good_bundle, trust_2of3):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    stranger = [Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()]

    def resign(m: dict[str, bytes]) -> None:
        m.update(resigned(m, json.loads(m[MANIFEST]), stranger))

    refused(variant(tmp_path, good_bundle, resign), trust_2of3, "2 by unknown keys")


def test_too_few_signatures_for_threshold_rejected(tmp_path, good_bundle, trust_2of3, signing_keys):
    def resign(m: dict[str, bytes]) -> None:
        m.update(resigned(m, json.loads(m[MANIFEST]), signing_keys[:1]))

    refused(variant(tmp_path, good_bundle, resign), trust_2of3, "1 valid of 2 required")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("lineage"), "missing field"),
        (lambda d: d.update(owner="mallory"), "unexpected field"),
        (lambda d: d.update(version="3"), "expected int"),
        (lambda d: d.update(name="../../etc"), "not a valid name"),
        (lambda d: d["members"].pop("samples.json"), "must list exactly"),
        (lambda d: d["model"]["inputs"][0].update(dtype="complex"), "is not one of"),
    ],
)
def test_malformed_manifest_rejected_even_when_signed(
    tmp_path, good_bundle, trust_2of3, signing_keys, mutate, message
):
    def edit(m: dict[str, bytes]) -> None:
        doc = json.loads(m[MANIFEST])
        mutate(doc)
        m.update(resigned(m, doc, signing_keys[:2]))

    refused(variant(tmp_path, good_bundle, edit), trust_2of3, message)


def test_non_canonical_manifest_rejected(tmp_path, good_bundle, trust_2of3, signing_keys):
    def edit(m: dict[str, bytes]) -> None:
        pretty = json.dumps(json.loads(m[MANIFEST]), indent=2).encode()
        sigs = sign(Context.BUNDLE_MANIFEST, pretty, signing_keys[:2])
        m[MANIFEST] = pretty
        m[SIGNATURES] = canonical_bytes([s.to_json() for s in sigs])

    refused(variant(tmp_path, good_bundle, edit), trust_2of3, "canonical form")


def test_signed_non_tflite_model_rejected(tmp_path, good_bundle, trust_2of3, signing_keys):
    import hashlib

    def edit(m: dict[str, bytes]) -> None:
        fake = b"\x7fELF" + b"\0" * 100
        doc = json.loads(m[MANIFEST])
        doc["members"][MODEL] = {"sha256": hashlib.sha256(fake).hexdigest(), "size": len(fake)}
        m[MODEL] = fake
        m.update(resigned(m, doc, signing_keys[:2]))

    refused(variant(tmp_path, good_bundle, edit), trust_2of3, "not a TFLite flatbuffer")


def test_build_refuses_a_model_that_is_not_tflite(tmp_path, reference, signing_keys):
    with pytest.raises(BuildError, match="not a TFLite flatbuffer"):
        build_bundle(
            b"PK\x03\x04 not a model",
            name="m",
            version=1,
            reference=reference,
            keys=signing_keys[:1],
            out=tmp_path / "x.efb",
        )
    assert not list(tmp_path.iterdir())


def test_build_refuses_reference_of_wrong_width(tmp_path, demo_dir, signing_keys):
    bad = ReferenceData(np.zeros((10, 3)), ("a", "b", "c"))
    with pytest.raises(BuildError, match="reference data has 3 features"):
        build_bundle(
            (demo_dir / "model-int8.tflite").read_bytes(),
            name="m",
            version=1,
            reference=bad,
            keys=signing_keys[:1],
            out=tmp_path / "x.efb",
        )


def test_failed_extraction_leaves_nothing_behind(tmp_path, good_bundle, trust_2of3):
    def flip(m: dict[str, bytes]) -> None:
        m["schema.json"] = m["schema.json"][:-1] + b"]"

    path = variant(tmp_path, good_bundle, flip)
    dest = tmp_path / "slot"
    with pytest.raises(BundleError):
        extract_bundle(path, trust_2of3, dest)
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["variant.efb"]
