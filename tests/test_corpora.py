"""Corpus adapters on tiny fixtures in each corpus's native layout, and on ../shared/data.

Adapters never decode audio, so the fixture audio files are empty.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from deepfake_detect.data.corpora.asvspoof5 import ASVspoof5
from deepfake_detect.data.corpora.asvspoof2017 import ASVspoof2017
from deepfake_detect.data.corpora.asvspoof2019 import ASVspoof2019
from deepfake_detect.data.corpora.asvspoof2021 import ASVspoof2021
from deepfake_detect.data.corpora.base import Corpus
from deepfake_detect.data.corpora.fake_or_real import FakeOrReal
from deepfake_detect.data.corpora.in_the_wild import InTheWild
from deepfake_detect.data.corpora.manifest_csv import ManifestCSV
from deepfake_detect.data.corpora.wavefake import WaveFake
from deepfake_detect.data.manifest import CorpusError, Utterance
from deepfake_detect.data.splits import SpeakerSplit, split_by_speaker

REPO = Path(__file__).parents[1]
CORPUS_CONF = REPO / "conf" / "data" / "corpus"
SHARED = REPO / "../shared/data"


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def counts(rows: list[Utterance]) -> Counter:
    return Counter((row.label, row.attack) for row in rows)


# --- fixtures in native layouts -------------------------------------------------------------


def make_asvspoof2019(root: Path, track: str = "LA") -> Path:
    env = "-" if track == "LA" else "abc"
    attacks = {"train": "A01", "dev": "A02", "eval": "A07"} if track == "LA" else {}
    letter = {"train": "T", "dev": "D", "eval": "E"}
    suffix = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}
    for split in ("train", "dev", "eval"):
        ids = [f"{track}_{letter[split]}_{n:07d}" for n in range(1, 5)]
        attack = attacks.get(split, "BC")
        write(
            root
            / track
            / f"ASVspoof2019_{track}_cm_protocols"
            / f"ASVspoof2019.{track}.cm.{suffix[split]}.txt",
            [f"{track}_0001 {ids[0]} {env} - bonafide", f"{track}_0001 {ids[1]} {env} - bonafide"]
            + [f"{track}_0002 {i} {env} {attack} spoof" for i in ids[2:]],
        )
        for i in ids:
            touch(root / track / f"ASVspoof2019_{track}_{split}" / "flac" / f"{i}.flac")
    return root


def make_asvspoof2017(root: Path, nested: bool = False) -> Path:
    suffix = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}
    for split, letter in (("train", "T"), ("dev", "D"), ("eval", "E")):
        files = [f"{letter}_100000{n}.wav" for n in range(1, 4)]
        write(
            root / "protocol_V2" / f"ASVspoof2017_V2_{suffix[split]}.txt",
            [
                f"{files[0]} genuine M0005 S01 - - -",
                f"{files[1]} genuine M0005 S02 - - -",
                f"{files[2]} spoof M0005 S01 E02 P01 R03",
            ],
        )
        folder = root / f"ASVspoof2017_V2_{split}"
        for f in files:
            touch((folder / folder.name if nested else folder) / f)
    return root


def make_asvspoof2021(root: Path, track: str) -> Path:
    if track == "LA":
        keys = root / "LA-keys-full" / "keys" / "LA" / "CM" / "trial_metadata.txt"
        lines = [
            "LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval",
            "LA_0009 LA_E_5013670 none loc_tx bonafide bonafide notrim eval",
            "LA_0010 LA_E_1000001 g722 sin_tx A19 spoof notrim progress",
            "LA_0010 LA_E_1000002 gsm mad_tx A13 spoof trim hidden_track_1",
        ]
        write(keys, lines)
        for line in lines:
            touch(root / "ASVspoof2021_LA_eval" / "flac" / f"{line.split()[1]}.flac")
    else:
        keys = root / "keys" / "DF" / "CM" / "trial_metadata.txt"
        lines = [
            "LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim progress "
            "traditional_vocoder - - - -",
            "TEF2 DF_E_2000013 low_m4a vcc2020 Task1-team20 spoof notrim eval "
            "neural_vocoder_nonautoregressive - - - -",
            "LA_0031 DF_E_2000014 mp3m4a asvspoof bonafide bonafide notrim eval bonafide - - - -",
            "TEF1 DF_E_2000015 high_ogg vcc2018 bonafide bonafide notrim eval bonafide - - - -",
        ]
        write(keys, lines)
        for n, line in enumerate(lines):
            part = root / f"ASVspoof2021_DF_eval_part0{n % 2}" / "ASVspoof2021_DF_eval" / "flac"
            touch(part / f"{line.split()[1]}.flac")
    return root


def make_asvspoof5(root: Path) -> Path:
    protocols = root / "ASVspoof5_protocols"
    names = {
        "train": "ASVspoof5.train.tsv",
        "dev": "ASVspoof5.dev.track_1.tsv",
        "eval": "ASVspoof5.eval.track_1.tsv",
    }
    folders = {"train": "flac_T", "dev": "flac_D", "eval": "flac_E_eval"}
    for split, letter in (("train", "T"), ("dev", "D"), ("eval", "E")):
        ids = [f"{letter}_000000000{n}" for n in range(3)]
        write(
            protocols / names[split],
            [
                f"{letter}_4850 {ids[0]} F - - - - bonafide bonafide -",
                f"{letter}_4850 {ids[1]} F C05 3 {ids[0]} AC2 A11 spoof -",
                f"{letter}_0001 {ids[2]} M - - - AC1 A05 spoof -",
            ],
        )
        for i in ids:
            touch(root / folders[split] / f"{i}.flac")
    touch(root / "flac_D" / "D_A000000001.flac")  # a track 2 enrolment file
    return root


def make_in_the_wild(root: Path) -> Path:
    folder = root / "release_in_the_wild"
    speakers = [f"Person {n}" for n in range(30)]
    lines = ["file,speaker,label"]
    for n in range(120):
        lines.append(f"{n}.wav,{speakers[n % 30]},{'spoof' if n % 3 else 'bona-fide'}")
        touch(folder / f"{n}.wav")
    write(folder / "meta.csv", lines)
    return root


def make_wavefake(root: Path) -> Path:
    real = root / "LJSpeech-1.1" / "wavs"
    ids = [f"LJ001-{n:04d}" for n in range(1, 11)]
    for i in ids:
        touch(real / f"{i}.wav")
    touch(real / "LJ050-0001.wav")  # no generated counterpart
    gen = root / "generated_audio"
    for i in ids:
        touch(gen / "ljspeech_melgan" / f"{i}_gen.wav")
        touch(gen / "ljspeech_hifiGAN" / f"{i}_generated.wav")
        touch(gen / "ljspeech_waveglow" / f"{i}.wav")
    touch(gen / "common_voices_prompts_from_conformer_fastspeech2_pwg_ljspeech" / "cv_1_gen.wav")
    return root


def make_fake_or_real(root: Path, folder: str = "for-2seconds") -> Path:
    for split_folder, n in (("training", 4), ("validation", 2), ("testing", 3)):
        for label in ("real", "fake"):
            for k in range(n):
                touch(root / folder / split_folder / label / f"file{k}.wav_16k.wav_norm.wav")
    return root


def make_manifest(root: Path, with_split: bool = True, suffix: str = ".csv") -> Path:
    sep = "\t" if suffix == ".tsv" else ","
    header = ["path", "label", "attack", "speaker", "device"] + (["split"] if with_split else [])
    lines = [sep.join(header)]
    labels = ["bonafide", "Bona-Fide", "genuine", "real", "spoof", "FAKE"]
    for n in range(24):
        label = labels[n % len(labels)]
        attack = "tts1" if label.lower() in ("spoof", "fake") else ""
        fields = [f"audio/spk{n % 8}/utt{n}.wav", label, attack, f"spk{n % 8}", "phone"]
        if with_split:
            fields.append("train" if n < 16 else "eval")
        lines.append(sep.join(fields))
        touch(root / "audio" / f"spk{n % 8}" / f"utt{n}.wav")
    return write(root / f"manifest{suffix}", lines)


# --- the speaker-disjoint split --------------------------------------------------------------


def _speaker_rows(n_speakers: int = 200) -> list[Utterance]:
    rng = random.Random(7)
    rows = []
    for s in range(n_speakers):
        for k in range(rng.randint(1, 12)):
            label = "spoof" if k % 2 else "bonafide"
            rows.append(Utterance(f"s{s}_{k}", f"/x/s{s}_{k}.wav", label, speaker=f"spk{s}"))
    return rows


def test_split_by_speaker_is_deterministic_disjoint_and_follows_fractions() -> None:
    rows = _speaker_rows()
    fractions = {"train": 0.7, "dev": 0.1, "test": 0.2}
    first = split_by_speaker(rows, fractions, seed=3)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    again = split_by_speaker(shuffled, fractions, seed=3)
    for name in fractions:
        assert sorted(r.utt_id for r in first[name]) == sorted(r.utt_id for r in again[name])
        assert all(r.split == name for r in first[name])
        assert abs(len(first[name]) / len(rows) - fractions[name]) < 0.03
    speakers = [{r.speaker for r in first[name]} for name in fractions]
    assert not (speakers[0] & speakers[1] or speakers[0] & speakers[2] or speakers[1] & speakers[2])
    assert sum(len(v) for v in first.values()) == len(rows)
    other = split_by_speaker(rows, fractions, seed=4)
    assert {r.utt_id for r in other["dev"]} != {r.utt_id for r in first["dev"]}
    assert all(r.split == "-" for r in rows)  # the input rows are not modified


def test_split_by_speaker_edge_cases() -> None:
    rows = _speaker_rows(20)
    split = split_by_speaker(rows, {"train": 1, "dev": 0, "test": 1}, seed=0)
    assert split["dev"] == [] and split["train"] and split["test"]
    anonymous = [Utterance(f"u{n}", f"/x/{n}.wav", "spoof") for n in range(100)]
    spread = split_by_speaker(anonymous, seed=0)  # unknown speakers: one group per row
    assert [len(spread[n]) for n in ("train", "dev", "test")] == [70, 10, 20]
    with pytest.raises(ValueError, match="reserved"):
        split_by_speaker(rows, {"train": 0.5, "all": 0.5})
    with pytest.raises(ValueError, match="positive sum"):
        split_by_speaker(rows, {"train": 0, "test": 0})
    with pytest.raises(ValueError, match="unknown split setting"):
        SpeakerSplit.from_config({"fractions": {"train": 1}, "sed": 1})
    setting = SpeakerSplit.from_config(OmegaConf.create({"fractions": {"a": 1, "b": 1}}))
    assert setting.names == ("a", "b", "all") and setting.seed == 0


# --- ASVspoof 2019 and the shared base checks ------------------------------------------------


def test_asvspoof2019_la(tmp_path: Path) -> None:
    corpus = ASVspoof2019(make_asvspoof2019(tmp_path))
    rows = corpus.load("eval")
    assert counts(rows) == {("bonafide", "-"): 2, ("spoof", "A07"): 2}
    assert rows[0].utt_id == "LA_E_0000001" and rows[0].speaker == "LA_0001"
    assert rows[0].split == "eval" and rows[0].extra == {}
    assert corpus.report["eval"] == {
        "rows": 4,
        "missing_audio": 0,
        "missing_examples": [],
        "unlisted_audio": 0,
    }
    # Also accepted: the LA/ folder itself as root.
    assert len(ASVspoof2019(tmp_path / "LA").load("train")) == 4


def test_asvspoof2019_pa_factors(tmp_path: Path) -> None:
    rows = ASVspoof2019(make_asvspoof2019(tmp_path, "PA"), track="PA").load("dev")
    spoof = [r for r in rows if r.label == "spoof"][0]
    assert spoof.attack == "BC"
    assert spoof.extra == {
        "environment": "abc",
        "room_size": "a",
        "t60": "b",
        "talker_asv_distance": "c",
        "attacker_talker_distance": "B",
        "replay_quality": "C",
    }
    bona = [r for r in rows if r.label == "bonafide"][0]
    assert bona.attack == "-" and "replay_quality" not in bona.extra


def test_unknown_split_and_wrong_root(tmp_path: Path) -> None:
    corpus = ASVspoof2019(make_asvspoof2019(tmp_path))
    with pytest.raises(CorpusError, match="unknown split 'test'.*train, dev, eval"):
        corpus.load("test")
    with pytest.raises(CorpusError, match=r"root not found: .*nowhere.*`root` setting"):
        ASVspoof2019(tmp_path / "nowhere").load("train")
    with pytest.raises(CorpusError, match=r"protocol not found: .*train\.trn\.txt"):
        ASVspoof2019(tmp_path, track="PA").load("train")


def test_missing_audio_error_skip_and_unlisted_audio(tmp_path: Path) -> None:
    root = make_asvspoof2019(tmp_path)
    flac = root / "LA" / "ASVspoof2019_LA_dev" / "flac"
    (flac / "LA_D_0000001.flac").unlink()
    (flac / "LA_D_0000003.flac").unlink()
    touch(flac / "LA_D_9999999.flac")  # e.g. an ASV enrolment file: counted, not an error
    with pytest.raises(CorpusError, match=r"2 of 4 protocol rows have no audio.*LA_D_0000001"):
        ASVspoof2019(root).load("dev")
    corpus = ASVspoof2019(root, missing_audio="skip")
    assert len(corpus.load("dev")) == 2
    assert corpus.report["dev"] == {
        "rows": 4,
        "missing_audio": 2,
        "missing_examples": [str(flac / "LA_D_0000001.flac"), str(flac / "LA_D_0000003.flac")],
        "unlisted_audio": 1,
    }


def test_protocol_errors_name_file_and_line(tmp_path: Path) -> None:
    root = make_asvspoof2019(tmp_path)
    protocol = root / "LA" / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.dev.trl.txt"
    protocol.write_text(protocol.read_text() + "LA_0003 LA_D_0000009 - A01 fake\n")
    with pytest.raises(CorpusError, match=r"dev\.trl\.txt:5: unknown label 'fake'"):
        ASVspoof2019(root).load("dev")
    protocol.write_text("LA_0003 LA_D_0000009 bonafide\n")
    with pytest.raises(CorpusError, match=r"dev\.trl\.txt:1: expected 5 columns"):
        ASVspoof2019(root).load("dev")


# --- ASVspoof 2017 ---------------------------------------------------------------------------


@pytest.mark.parametrize("nested", [False, True])
def test_asvspoof2017(tmp_path: Path, nested: bool) -> None:
    corpus = ASVspoof2017(make_asvspoof2017(tmp_path, nested))
    rows = corpus.load("dev")
    assert counts(rows) == {("bonafide", "-"): 2, ("spoof", "E02-P01-R03"): 1}
    assert rows[0].utt_id == "D_1000001" and rows[0].speaker == "M0005"
    assert rows[2].extra == {
        "phrase": "S01",
        "environment": "E02",
        "playback_device": "P01",
        "recording_device": "R03",
    }
    assert corpus.report["dev"]["unlisted_audio"] == 0


def test_asvspoof2017_errors(tmp_path: Path) -> None:
    root = make_asvspoof2017(tmp_path)
    protocol = root / "protocol_V2" / "ASVspoof2017_V2_train.trn.txt"
    protocol.write_text(protocol.read_text() + "T_1000009.wav replay M0005 S01 E01 P01 R01\n")
    with pytest.raises(CorpusError, match=r"train\.trn\.txt:4: unknown label 'replay'"):
        ASVspoof2017(root).load("train")
    with pytest.raises(CorpusError, match="protocol_V2"):
        ASVspoof2017(root / "ASVspoof2017_V2_dev").load("dev")


# --- ASVspoof 2021 ---------------------------------------------------------------------------


def test_asvspoof2021_la_subsets(tmp_path: Path) -> None:
    root = make_asvspoof2021(tmp_path, "LA")
    corpus = ASVspoof2021(root, track="LA")
    rows = corpus.load("eval")  # every trial of the keys: the official score file needs them all
    assert [r.extra["subset"] for r in rows] == ["eval", "eval", "progress", "hidden_track_1"]
    assert rows[0].extra == {
        "codec": "alaw",
        "transmission": "ita_tx",
        "trim": "notrim",
        "subset": "eval",
    }
    assert corpus.report["eval"]["rows"] == 4
    # ... and the metrics count the eval phase only (metric_subsets: [eval] by default).
    assert corpus.metric_mask("eval", rows) == [True, True, False, False]
    assert corpus.metric_mask("eval", rows[2:]) == [False, False]  # filtered rows: their mask
    assert ASVspoof2021(root, metric_subsets=None).metric_mask("eval", rows) is None
    both = ASVspoof2021(root, metric_subsets=["eval", "progress"]).metric_mask("eval", rows)
    assert both == [True, True, True, False]
    # `subsets` still restricts the trials loaded (and the metrics default to them, within).
    picked = ASVspoof2021(root, subsets=["progress", "hidden_track_1"], metric_subsets=None)
    assert {r.attack for r in picked.load("eval")} == {"A19", "A13"}
    assert picked.metric_mask("eval", rows) is None
    present = "present: eval, hidden_track_1, progress"
    with pytest.raises(CorpusError, match=f"hidden not in the keys.*{present}.*`subsets`"):
        ASVspoof2021(root, subsets=["hidden"], metric_subsets=None).load("eval")
    with pytest.raises(CorpusError, match=f"hidden not in the keys.*{present}.*`metric_subsets`"):
        ASVspoof2021(root, metric_subsets=["hidden"]).load("eval")
    with pytest.raises(ValueError, match="metric_subsets eval not among the loaded subsets"):
        ASVspoof2021(root, subsets=["progress"])
    with pytest.raises(CorpusError, match="unknown split 'train'"):
        corpus.load("train")


def test_asvspoof2021_df_parts(tmp_path: Path) -> None:
    root = make_asvspoof2021(tmp_path, "DF")
    corpus = ASVspoof2021(root, track="DF")
    rows = corpus.load("eval")
    assert corpus.name == "asvspoof2021_df" and len(rows) == 4
    assert {Path(r.path).parts[-4] for r in rows} == {
        "ASVspoof2021_DF_eval_part00",
        "ASVspoof2021_DF_eval_part01",
    }
    vcc = rows[1]
    assert vcc.attack == "Task1-team20" and vcc.speaker == "TEF2"
    assert vcc.extra == {
        "codec": "low_m4a",
        "source": "vcc2020",
        "vocoder": "neural_vocoder_nonautoregressive",
        "trim": "notrim",
        "subset": "eval",
    }
    assert rows[2].attack == "-" and rows[2].label == "bonafide"
    assert corpus.metric_mask("eval", rows) == [False, True, True, True]  # [eval] by default


def test_asvspoof2021_errors(tmp_path: Path) -> None:
    root = make_asvspoof2021(tmp_path, "DF")
    with pytest.raises(CorpusError, match="keys not found.*LA-keys-full.*`keys_file`"):
        ASVspoof2021(root, track="LA").load("eval")
    keys = root / "keys" / "DF" / "CM" / "trial_metadata.txt"
    keys.write_text(keys.read_text() + "LA_0001 DF_E_2000099 nocodec asvspoof A14\n")
    with pytest.raises(CorpusError, match=r"trial_metadata\.txt:5: expected at least 9 columns"):
        ASVspoof2021(root, track="DF").load("eval")
    keys.write_text("LA_0001 DF_E_2000099 nocodec asvspoof A14 maybe notrim eval x - - - -\n")
    with pytest.raises(CorpusError, match=r"trial_metadata\.txt:1: unknown label 'maybe'"):
        ASVspoof2021(root, track="DF").load("eval")
    empty = tmp_path / "empty"
    write(empty / "keys" / "LA" / "CM" / "trial_metadata.txt", [])
    with pytest.raises(CorpusError, match=r"no audio folder.*ASVspoof2021_LA_eval/flac"):
        ASVspoof2021(empty).load("eval")


# --- ASVspoof 5 ------------------------------------------------------------------------------


def test_asvspoof5(tmp_path: Path) -> None:
    root = make_asvspoof5(tmp_path)
    corpus = ASVspoof5(root)
    rows = corpus.load("dev")
    assert counts(rows) == {("bonafide", "-"): 1, ("spoof", "A11"): 1, ("spoof", "A05"): 1}
    assert rows[1].extra == {
        "gender": "F",
        "codec": "C05",
        "codec_q": "3",
        "codec_seed": "D_0000000000",
        "attack_tag": "AC2",
    }
    assert rows[1].path.endswith("flac_D/D_0000000001.flac") and rows[1].speaker == "D_4850"
    assert corpus.report["dev"]["unlisted_audio"] == 1
    assert len(corpus.load("eval")) == 3
    # Protocols unpacked straight into the root are found too.
    for tsv in (root / "ASVspoof5_protocols").iterdir():
        tsv.rename(root / tsv.name)
    assert len(ASVspoof5(root).load("train")) == 3


def test_asvspoof5_errors(tmp_path: Path) -> None:
    root = make_asvspoof5(tmp_path)
    tsv = root / "ASVspoof5_protocols" / "ASVspoof5.train.tsv"
    tsv.write_text(tsv.read_text() + "T_0001 T_0000000009 M - - - AC1 A05 spoof\n")
    with pytest.raises(CorpusError, match=r"train\.tsv:4: expected 10 columns"):
        ASVspoof5(root).load("train")
    tsv.unlink()
    with pytest.raises(CorpusError, match=r"train protocol not found.*ASVspoof5_protocols"):
        ASVspoof5(root).load("train")


# --- In-the-Wild -----------------------------------------------------------------------------


def test_in_the_wild(tmp_path: Path) -> None:
    root = make_in_the_wild(tmp_path)
    touch(root / "release_in_the_wild" / "999.wav")  # not in meta.csv
    corpus = InTheWild(root)
    assert corpus.splits == ("train", "dev", "test", "all")
    every = corpus.load("all")
    assert Counter(r.label for r in every) == {"bonafide": 40, "spoof": 80}
    assert corpus.report["all"] == {
        "rows": 120,
        "missing_audio": 0,
        "missing_examples": [],
        "unlisted_audio": 1,
    }
    assert every[0].utt_id == "0" and every[0].speaker == "Person 0" and every[0].split == "all"
    parts = {s: corpus.load(s) for s in ("train", "dev", "test")}
    assert sum(len(p) for p in parts.values()) == 120
    speakers = {s: {r.speaker for r in p} for s, p in parts.items()}
    assert not (speakers["train"] & speakers["test"] or speakers["dev"] & speakers["test"])
    # The folder itself as root, and a different seed from config.
    other = InTheWild(root / "release_in_the_wild", split={"seed": 1})
    assert {r.utt_id for r in other.load("test")} != {r.utt_id for r in parts["test"]}


def test_in_the_wild_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"In-the-Wild root not found.*`root` setting"):
        InTheWild(tmp_path / "missing").load("all")
    with pytest.raises(CorpusError, match=r"metadata not found: .*meta\.csv"):
        InTheWild(tmp_path).load("all")
    root = make_in_the_wild(tmp_path)
    meta = root / "release_in_the_wild" / "meta.csv"
    meta.write_text(meta.read_text() + "500.wav,Person 1,bonafide\n")
    with pytest.raises(CorpusError, match=r"meta\.csv:122: unknown label 'bonafide'"):
        InTheWild(root).load("all")
    meta.write_text("name,label\n0.wav,spoof\n")
    with pytest.raises(CorpusError, match="expected the header 'file,speaker,label'"):
        InTheWild(root).load("train")


# --- WaveFake --------------------------------------------------------------------------------


def test_wavefake_pairs_and_generators(tmp_path: Path) -> None:
    root = make_wavefake(tmp_path)
    corpus = WaveFake(root, real_roots=["LJSpeech-1.1"])
    rows = corpus.load("all")
    assert Counter(r.attack for r in rows if r.label == "spoof") == {
        "ljspeech_melgan": 10,
        "ljspeech_hifiGAN": 10,
        "ljspeech_waveglow": 10,
        "common_voices_prompts_from_conformer_fastspeech2_pwg_ljspeech": 1,
    }
    bona = [r for r in rows if r.label == "bonafide"]
    assert len(bona) == 10 and bona[0].speaker == "LJSpeech-1.1"
    pairs = Counter(r.extra["pair"] for r in rows)
    assert pairs["LJ001-0001"] == 4 and pairs["-"] == 1  # the real file and its three fakes
    assert corpus.report["all"]["unlisted_audio"] == 1  # LJ050-0001 pairs with no fake
    assert corpus.report["all"]["unpaired_fakes"] == 1
    chosen = WaveFake(root, real_roots=[root / "LJSpeech-1.1"], generators=["ljspeech_melgan"])
    assert counts(chosen.load("all")) == {("bonafide", "-"): 10, ("spoof", "ljspeech_melgan"): 10}


def test_wavefake_split_keeps_pairs_together(tmp_path: Path) -> None:
    corpus = WaveFake(make_wavefake(tmp_path), real_roots=["LJSpeech-1.1"])
    where: dict[str, set[str]] = {}
    for split in ("train", "dev", "test"):
        for row in corpus.load(split):
            key = row.utt_id if row.extra["pair"] == "-" else row.extra["pair"]
            where.setdefault(key, set()).add(split)
    assert len(where) == 11 and all(len(splits) == 1 for splits in where.values())


def test_wavefake_errors(tmp_path: Path) -> None:
    root = make_wavefake(tmp_path)
    with pytest.raises(CorpusError, match="unknown generator.*melgan in `generators`.*available: "):
        WaveFake(root, real_roots=["LJSpeech-1.1"], generators=["melgan"]).load("all")
    with pytest.raises(CorpusError, match="real audio folder not found.*`real_roots` setting"):
        WaveFake(root, real_roots=["jsut_ver1.1"]).load("all")
    with pytest.raises(CorpusError, match="`real_roots` is empty"):
        WaveFake(root).load("all")
    with pytest.raises(CorpusError, match="WaveFake root not found"):
        WaveFake(tmp_path / "nope", real_roots=["x"]).load("all")


# --- Fake-or-Real ----------------------------------------------------------------------------


@pytest.mark.parametrize("relative_root", ["", "for-2seconds", "outer"])
def test_fake_or_real(tmp_path: Path, relative_root: str) -> None:
    base = tmp_path / "outer" if relative_root == "outer" else tmp_path
    make_fake_or_real(base / "for-2sec" if relative_root == "outer" else base)
    root = tmp_path / relative_root
    corpus = FakeOrReal(root, variant="2sec")
    assert corpus.name == "fake_or_real_2sec"
    sizes = {split: counts(corpus.load(split)) for split in corpus.splits}
    assert sizes == {
        "train": {("bonafide", "-"): 4, ("spoof", "-"): 4},
        "dev": {("bonafide", "-"): 2, ("spoof", "-"): 2},
        "eval": {("bonafide", "-"): 3, ("spoof", "-"): 3},
    }
    row = corpus.load("dev")[0]
    assert row.utt_id.startswith("validation/real/file") and row.split == "dev"


def test_fake_or_real_errors(tmp_path: Path) -> None:
    make_fake_or_real(tmp_path)
    with pytest.raises(CorpusError, match="no training/validation/testing folders.*for-norm"):
        FakeOrReal(tmp_path, variant="norm").load("train")
    with pytest.raises(ValueError, match="variant must be one of"):
        FakeOrReal(tmp_path, variant="3sec")
    for path in (tmp_path / "for-2seconds" / "testing" / "fake").iterdir():
        path.unlink()
    (tmp_path / "for-2seconds" / "testing" / "fake").rmdir()
    with pytest.raises(CorpusError, match=r"eval fake/ folder not found: .*testing/fake"):
        FakeOrReal(tmp_path, variant="2sec").load("eval")


# --- own data: CSV / TSV manifest ------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_manifest_csv_with_split_column(tmp_path: Path, suffix: str) -> None:
    manifest = make_manifest(tmp_path, with_split=True, suffix=suffix)
    touch(tmp_path / "audio" / "stray.wav")
    corpus = ManifestCSV(manifest, name="mine")
    assert corpus.splits == ("train", "eval", "all")
    rows = corpus.load("train")
    assert len(rows) == 16 and Counter(r.label for r in rows) == {"bonafide": 12, "spoof": 4}
    assert rows[0].path == str(tmp_path / "audio" / "spk0" / "utt0.wav")
    assert rows[0].utt_id == "audio/spk0/utt0" and rows[0].extra == {"device": "phone"}
    assert rows[4].attack == "tts1" and rows[0].attack == "-" and rows[0].speaker == "spk0"
    assert corpus.report["train"]["unlisted_audio"] == 1
    assert len(ManifestCSV(tmp_path).load("all")) == 24  # a folder holding manifest.*


def test_manifest_csv_speaker_split(tmp_path: Path) -> None:
    corpus = ManifestCSV(make_manifest(tmp_path, with_split=False), split={"seed": 2})
    assert corpus.splits == ("train", "dev", "test", "all")
    parts = {s: corpus.load(s) for s in ("train", "dev", "test")}
    assert sum(len(p) for p in parts.values()) == 24
    speakers = [{r.speaker for r in p} for p in parts.values()]
    assert sum(len(s) for s in speakers) == len(set().union(*speakers)) == 8


def test_manifest_csv_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"manifest not found: .*`root` setting"):
        ManifestCSV(tmp_path / "x.csv").load("all")
    with pytest.raises(CorpusError, match=r"no manifest\.csv or manifest\.tsv"):
        ManifestCSV(tmp_path).load("all")
    bad = write(tmp_path / "a.csv", ["file,label", "x.wav,spoof"])
    with pytest.raises(CorpusError, match=r"a\.csv:1: missing column\(s\) path"):
        ManifestCSV(bad).load("all")
    bad = write(tmp_path / "b.csv", ["path,label", "x.wav,spoof", "y.wav,synthetic"])
    with pytest.raises(CorpusError, match=r"b\.csv:3: unknown label 'synthetic'"):
        ManifestCSV(bad).load("all")
    bad = write(tmp_path / "c.csv", ["path,label,split", "x.wav,spoof,train", "y.wav,real,"])
    with pytest.raises(CorpusError, match=r"c\.csv:3: empty split"):
        ManifestCSV(bad).load("train")
    missing = write(tmp_path / "d.csv", ["path,label", "nothere.wav,real"])
    with pytest.raises(CorpusError, match="1 of 1 protocol rows have no audio"):
        ManifestCSV(missing).load("all")


# --- Hydra configs ---------------------------------------------------------------------------

CONFIG_FIXTURES = {
    "asvspoof2019_pa": (lambda p: make_asvspoof2019(p, "PA"), {}, "train", 4),
    "asvspoof2017": (make_asvspoof2017, {}, "eval", 3),
    "asvspoof2021_la": (lambda p: make_asvspoof2021(p, "LA"), {}, "eval", 4),
    "asvspoof2021_df": (lambda p: make_asvspoof2021(p, "DF"), {}, "eval", 4),
    "asvspoof5": (make_asvspoof5, {}, "dev", 3),
    "in_the_wild": (make_in_the_wild, {}, "all", 120),
    "wavefake": (make_wavefake, {"real_roots": ["LJSpeech-1.1"]}, "all", 41),
    "fake_or_real": (lambda p: make_fake_or_real(p, "for-norm"), {}, "train", 8),
    "manifest_csv": (lambda p: make_manifest(p).parent, {}, "all", 24),
}


@pytest.mark.parametrize("config_name", sorted(CONFIG_FIXTURES))
def test_corpus_config_instantiates_and_loads(tmp_path: Path, config_name: str) -> None:
    build, overrides, split, n_rows = CONFIG_FIXTURES[config_name]
    cfg = OmegaConf.load(CORPUS_CONF / f"{config_name}.yaml")
    with pytest.raises(MissingMandatoryValue):
        instantiate(cfg)
    cfg.root = str(build(tmp_path))
    for key, value in overrides.items():
        cfg[key] = value
    corpus = instantiate(cfg)
    assert isinstance(corpus, Corpus) and split in corpus.splits
    assert len(corpus.load(split)) == n_rows


# --- the mini corpora in ../shared/data ------------------------------------------------------

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not present")


@needs_shared
def test_mini_la_counts_match_protocols() -> None:
    corpus = ASVspoof2019(SHARED / "mini_la")
    expected = {
        "train": {("bonafide", "-"): 1200} | {("spoof", f"A0{i}"): 300 for i in range(1, 5)},
        "dev": {("bonafide", "-"): 500} | {("spoof", f"A0{i}"): 125 for i in range(1, 5)},
        "eval": {("bonafide", "-"): 700} | {("spoof", f"A0{i}"): 175 for i in range(1, 9)},
    }
    for split, want in expected.items():
        assert counts(corpus.load(split)) == want
        assert corpus.report[split]["missing_audio"] == corpus.report[split]["unlisted_audio"] == 0


@needs_shared
def test_mini_wild_counts_and_split() -> None:
    corpus = InTheWild(SHARED / "mini_wild")
    every = corpus.load("all")
    assert Counter(r.label for r in every) == {"bonafide": 122, "spoof": 150}
    assert corpus.report["all"]["unlisted_audio"] == 0
    parts = {s: corpus.load(s) for s in ("train", "dev", "test")}
    again = InTheWild(SHARED / "mini_wild")
    assert [r.utt_id for r in again.load("test")] == [r.utt_id for r in parts["test"]]
    speakers = {s: {r.speaker for r in p} for s, p in parts.items()}
    assert not (speakers["train"] & speakers["dev"] or speakers["train"] & speakers["test"])
    assert not speakers["dev"] & speakers["test"]
    assert sum(len(p) for p in parts.values()) == 272
    # Speakers own up to 38 files here, so the fractions hold only roughly.
    assert abs(len(parts["train"]) / 272 - 0.7) < 0.1 and parts["dev"] and parts["test"]


@needs_shared
def test_mini_wavefake_pairs() -> None:
    corpus = WaveFake(SHARED / "mini_wavefake", real_roots=["real"], speaker_pattern=r"^(LS_\d+)_")
    rows = corpus.load("all")
    assert counts(rows) == {("bonafide", "-"): 100} | {
        ("spoof", g): 100 for g in ("world", "griffin_lim", "mlsa")
    }
    assert all(r.extra["pair"] != "-" for r in rows)
    assert corpus.report["all"] == {
        "rows": 400,
        "missing_audio": 0,
        "missing_examples": [],
        "unlisted_audio": 0,
        "unpaired_fakes": 0,
    }
    real = {r.extra["pair"]: r for r in rows if r.label == "bonafide"}
    fake = next(r for r in rows if r.attack == "mlsa")
    assert Path(real[fake.extra["pair"]].path).stem + "_gen" == Path(fake.path).stem
    assert fake.speaker == real[fake.extra["pair"]].speaker == fake.extra["pair"].rsplit("_", 1)[0]
