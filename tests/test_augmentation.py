"""hf_prunable_ctc/data/augmentation.py: each part changes the waveform as documented, the chain is seeded and
worker-safe, and short, empty or silent clips come back as finite float32."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from hf_prunable_ctc.data import augmentation as aug
from hf_prunable_ctc.data.augmentation import AugmentationConfig, WaveformAugmentation

SR = 16000
ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "training" / "configs" / "augmentation"


def _tone(seconds=1.0, frequency=440.0, level=0.25):
    t = np.arange(round(seconds * SR)) / SR
    return (level * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def _peak_frequency(waveform):
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    return np.fft.rfftfreq(len(waveform), 1 / SR)[np.argmax(spectrum)]


def _power(x):
    return float(np.mean(np.asarray(x, np.float64) ** 2))


@pytest.fixture(scope="module")
def rir_bank_path(tmp_path_factory):
    # Small, short rooms: simulated once for the module in about a second.
    return str(tmp_path_factory.mktemp("rir") / "bank.npz")


def _all_on(rir_bank_path, **changes):
    values = dict(speed_probability=1.0, pitch_probability=1.0, reverb_probability=1.0, reverb_rooms=2,
                  reverb_rt60_s=[0.15, 0.25], reverb_room_size_m=[3.0, 4.0], reverb_bank_path=rir_bank_path,
                  noise_probability=1.0, silence_probability=1.0, seed=3)
    values.update(changes)
    return AugmentationConfig(**values)


# ------------------------------------------------------------------------------------------------------- config


def test_default_config_is_off_and_changes_nothing():
    config = AugmentationConfig()
    assert not config.enabled
    x = _tone(0.5)
    np.testing.assert_array_equal(WaveformAugmentation(config)(x, SR), x)


@pytest.mark.parametrize("field, value, message", [
    ("noise_probability", 1.5, r"noise_probability: must be a number in \[0, 1\]"),
    ("speed_factors", [0.9, 3.0], r"speed_factors: must be a non-empty list of factors in \[0.5, 2.0\]"),
    ("noise_snr_db", [30.0, 5.0], r"noise_snr_db: must satisfy -10.0 <= low <= high <= 60.0"),
    ("silence_s", [0.5], r"silence_s: must be a list \[low, high\]"),
    ("noise_colors", ["purple"], r"noise_colors: must be a list of colours"),
    ("reverb_rooms", 0, r"reverb_rooms: must be an integer >= 1"),
    ("long_form_utterances", 1, r"long_form_utterances: must be an integer >= 2"),
    ("noise_dir", "/no/such/folder", r"noise_dir: is not a folder"),
    ("length_draws", "epoch", r"length_draws: must be one of \('utterance', 'batch'\)"),
])
def test_check_values_names_field_and_range(field, value, message):
    with pytest.raises(ValueError, match=rf"AugmentationConfig\.{message}"):
        AugmentationConfig(**{field: value}).check_values()


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match=r"unknown fields \['noise_prob'\]"):
        AugmentationConfig.from_dict({"noise_prob": 0.5})


def test_shipped_json_configs_load(tmp_path):
    paths = sorted(CONFIG_DIR.glob("*.json"))
    assert paths, "training/configs/augmentation/ should ship at least one config"
    for path in paths:
        config = AugmentationConfig.from_json(path)
        assert config.enabled
        assert AugmentationConfig.from_dict(json.loads(path.read_text())) == config


# -------------------------------------------------------------------------------------------------------- parts


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_changes_length_and_pitch_by_the_factor(factor):
    x = _tone(1.0, 440.0)
    y = aug.speed_perturb(x, SR, factor)
    assert abs(len(y) - len(x) / factor) <= 1
    assert y.dtype == np.float32
    assert _peak_frequency(y) == pytest.approx(440.0 * factor, abs=3.0)


def test_transpose_keeps_duration_and_moves_frequency():
    x = _tone(1.0, 440.0)
    y = aug.transpose(x, SR, 2.0)
    assert len(y) == len(x) and y.dtype == np.float32
    assert _peak_frequency(y) == pytest.approx(440.0 * 2 ** (2 / 12), rel=0.02)


@pytest.mark.parametrize("color, low_over_high", [("white", (0.5, 2.0)), ("pink", (5.0, 1e9)), ("brown", (50.0, 1e9))])
def test_colored_noise_has_unit_rms_and_its_spectral_slope(color, low_over_high):
    noise = aug.colored_noise(SR * 4, color, np.random.default_rng(0))
    assert _power(noise) == pytest.approx(1.0, rel=1e-3)
    spectrum = np.abs(np.fft.rfft(noise)) ** 2
    frequencies = np.fft.rfftfreq(len(noise), 1 / SR)
    ratio = spectrum[(frequencies > 100) & (frequencies < 400)].mean() / spectrum[frequencies > 4000].mean()
    assert low_over_high[0] < ratio < low_over_high[1]


@pytest.mark.parametrize("snr_db", [5.0, 17.5, 30.0])
def test_add_noise_reaches_the_snr(snr_db):
    x = _tone(1.0)
    noise = aug.colored_noise(len(x), "pink", np.random.default_rng(1))
    y = aug.add_noise(x, 3.0 * noise, snr_db)
    measured = 10 * math.log10(_power(x) / _power(y - x))
    assert measured == pytest.approx(snr_db, abs=0.01)


def test_add_noise_measures_snr_on_the_speech_part_only():
    speech = _tone(0.5)
    padded = np.concatenate([np.zeros(SR, np.float32), speech])
    noise = aug.colored_noise(len(padded), "white", np.random.default_rng(2))
    y = aug.add_noise(padded, noise, 10.0, reference=slice(SR, len(padded)))
    assert 10 * math.log10(_power(speech) / _power(y - padded)) == pytest.approx(10.0, abs=0.01)


def test_reverberation_keeps_length_and_level_and_smears_an_impulse(rir_bank_path):
    bank = aug.load_or_simulate_rir_bank(rir_bank_path, 2, SR, (0.15, 0.25), (3.0, 4.0), seed=0)
    assert len(bank) == 2 and all(rir.dtype == np.float32 and np.argmax(np.abs(rir)) == 0 for rir in bank)
    x = np.zeros(SR // 2, np.float32)
    x[1000] = 1.0
    y = aug.reverberate(x, bank[0])
    assert len(y) == len(x)
    assert np.argmax(np.abs(y)) == 1000  # the direct path stays where the speech was
    assert np.count_nonzero(np.abs(y[1001:]) > 1e-4) > 500  # and a reverberant tail follows it
    tone = _tone(0.5)
    assert _power(aug.reverberate(tone, bank[1])) == pytest.approx(_power(tone), rel=1e-4)


def test_rir_bank_is_cached_and_refuses_other_settings(rir_bank_path):
    first = aug.load_or_simulate_rir_bank(rir_bank_path, 2, SR, (0.15, 0.25), (3.0, 4.0), seed=0)
    again = aug.load_or_simulate_rir_bank(rir_bank_path, 2, SR, (0.15, 0.25), (3.0, 4.0), seed=0)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="was simulated with"):
        aug.load_or_simulate_rir_bank(rir_bank_path, 3, SR, (0.15, 0.25), (3.0, 4.0), seed=0)


def test_pad_silence_adds_the_right_length_at_a_low_level():
    x = _tone(0.5)
    y = aug.pad_silence(x, SR, 0.4, 1.0, -60.0, np.random.default_rng(0))
    lead = round(0.4 * SR)
    assert len(y) == lead + len(x) + SR
    np.testing.assert_array_equal(y[lead:lead + len(x)], x)
    for part in (y[:lead], y[lead + len(x):]):
        assert 10 * math.log10(_power(part)) == pytest.approx(-60.0, abs=0.1)
    zeros = aug.pad_silence(x, SR, 0.1, 0.0, None, np.random.default_rng(0))
    assert not zeros[:1600].any() and len(zeros) == len(x) + 1600


def test_noise_files_give_excerpts_resampled_and_looped(tmp_path):
    import soundfile

    folder = tmp_path / "musan" / "noise" / "free-sound"
    folder.mkdir(parents=True)
    soundfile.write(folder / "noise-free-sound-0000.wav", 0.1 * np.ones(800, np.float32), 8000)  # 0.1 s at 8 kHz
    files = aug.NoiseFiles(tmp_path / "musan")
    excerpt = files.excerpt(SR, SR, np.random.default_rng(0))  # 1 s from a 0.1 s file: looped
    assert excerpt.shape == (SR,) and excerpt.dtype == np.float32
    assert files.load(0, SR).shape == (1600,)  # resampled from 8 kHz
    assert math.sqrt(_power(excerpt)) == pytest.approx(0.1, rel=0.1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no noise files"):
        aug.NoiseFiles(tmp_path / "empty")


def test_chain_draws_noise_from_files_when_configured(tmp_path):
    import soundfile

    soundfile.write(tmp_path / "hum.wav", _tone(2.0, 1000.0, 0.5), SR)
    config = AugmentationConfig(noise_probability=1.0, noise_dir=str(tmp_path), noise_colors=[], noise_snr_db=[0, 0])
    x = _tone(1.0, 200.0)
    y = WaveformAugmentation(config)(x, SR)
    assert _peak_frequency(y - x) == pytest.approx(1000.0, abs=3.0)


def test_concatenate_utterances_joins_with_pauses():
    a, b, c = _tone(0.3), _tone(0.2, 300.0), _tone(0.1, 500.0)
    waveform, transcript = aug.concatenate_utterances([a, b, c], ["HELLO", "BIG", "WORLD"], SR, [0.5, 1.0])
    assert transcript == "HELLO BIG WORLD"
    assert len(waveform) == len(a) + len(b) + len(c) + round(1.5 * SR)
    np.testing.assert_array_equal(waveform[len(a) + SR // 2:len(a) + SR // 2 + len(b)], b)
    assert not waveform[len(a):len(a) + SR // 2].any()
    with pytest.raises(ValueError, match="need 2 pauses"):
        aug.concatenate_utterances([a, b, c], ["A", "B", "C"], SR, [0.5])


def test_join_batch_joins_a_share_of_batches_keeping_order():
    config = AugmentationConfig(long_form_probability=1.0, long_form_utterances=3, long_form_pause_s=[0.5, 0.5])
    augment = WaveformAugmentation(config)
    clips = [_tone(0.1 * (i + 1)) for i in range(5)]
    texts = [f"WORD{i}" for i in range(5)]
    waveforms, transcripts = augment.join_batch(clips, texts)
    assert 2 <= len(waveforms) < 5 and len(transcripts) == len(waveforms)
    assert " ".join(transcripts) == " ".join(texts)
    pauses = (5 - len(waveforms)) * SR // 2
    assert sum(map(len, waveforms)) == sum(map(len, clips)) + pauses
    never = WaveformAugmentation(AugmentationConfig(long_form_probability=0.0))
    assert never.join_batch(clips, texts)[1] == texts


def test_length_draws_per_batch_keep_equal_clips_equally_long():
    # group_by_length puts clips of about the same length in one batch; per-utterance speed and silence draws undo
    # that (the padding cost 1.5x the frames on the 6-hour corpus), per-batch draws keep it.
    settings = dict(speed_probability=1.0, silence_probability=1.0, silence_s=[0.0, 1.0], seed=3)
    clips = [_tone(1.0) for _ in range(8)]
    texts = ["A"] * 8
    per_batch = WaveformAugmentation(AugmentationConfig(length_draws="batch", **settings))
    batch_lengths = set()
    for _ in range(3):
        waveforms, _ = per_batch.join_batch(clips, texts)
        lengths = {len(per_batch(clip, SR)) for clip in waveforms}
        assert len(lengths) == 1  # one speed factor and one pair of silences for the whole batch
        batch_lengths |= lengths
        assert lengths.pop() > len(clips[0]) * 0.9 - 1
    assert len(batch_lengths) > 1  # and new ones for the next batch
    per_utterance = WaveformAugmentation(AugmentationConfig(**settings))
    waveforms, _ = per_utterance.join_batch(clips, texts)
    assert len({len(per_utterance(clip, SR)) for clip in waveforms}) > 1


# -------------------------------------------------------------------------------------------------------- chain


def test_chain_is_deterministic_given_the_seed(rir_bank_path):
    x = _tone(0.7)
    first = WaveformAugmentation(_all_on(rir_bank_path))
    second = WaveformAugmentation(_all_on(rir_bank_path))
    outputs = [first(x, SR) for _ in range(3)]
    for output in outputs:
        np.testing.assert_array_equal(output, second(x, SR))
    assert not np.array_equal(outputs[0], outputs[1])  # one generator, new draws per call
    other = WaveformAugmentation(_all_on(rir_bank_path, seed=4))(x, SR)
    assert len(other) != len(outputs[0]) or not np.array_equal(other, outputs[0])
    first.reseed(3)
    np.testing.assert_array_equal(first(x, SR), outputs[0])


@pytest.mark.parametrize("num_samples", [0, 1, 2, 400])
@pytest.mark.parametrize("silent", [True, False])
def test_chain_survives_short_empty_and_silent_clips(rir_bank_path, num_samples, silent):
    x = np.zeros(num_samples) if silent else np.random.default_rng(0).uniform(-0.5, 0.5, num_samples)
    augment = WaveformAugmentation(_all_on(rir_bank_path))
    for _ in range(3):
        y = augment(x.astype(np.float64), SR)
        assert y.dtype == np.float32 and y.ndim == 1 and np.all(np.isfinite(y)) and np.max(np.abs(y), initial=0) <= 1


def test_each_part_alone_on_silence_and_tiny_clips(rir_bank_path):
    parts = dict(speed_probability=1.0, pitch_probability=1.0, reverb_probability=1.0, noise_probability=1.0,
                 silence_probability=1.0)
    for name in parts:
        config = AugmentationConfig(**{name: 1.0}, reverb_rooms=2, reverb_rt60_s=[0.15, 0.25],
                                    reverb_room_size_m=[3.0, 4.0], reverb_bank_path=rir_bank_path, seed=3)
        augment = WaveformAugmentation(config)
        for x in (np.zeros(0, np.float32), np.ones(1, np.float32) * 0.1, np.zeros(SR // 10, np.float32)):
            y = augment(x, SR)
            assert y.dtype == np.float32 and np.all(np.isfinite(y)), name


def test_chain_rejects_bad_input():
    augment = WaveformAugmentation(AugmentationConfig(noise_probability=1.0))
    with pytest.raises(ValueError, match="mono"):
        augment(np.zeros((2, 100), np.float32), SR)
    with pytest.raises(ValueError, match="set up for 16000 Hz"):
        augment(np.zeros(100, np.float32), 22050)
    with pytest.raises(ValueError, match="NaN"):
        augment(np.array([0.0, np.nan], np.float32), SR)


def test_dataloader_workers_draw_different_augmentations_and_repeat_with_the_seed():
    torch = pytest.importorskip("torch")

    class Clips(torch.utils.data.Dataset):
        def __init__(self):
            self.augment = WaveformAugmentation(AugmentationConfig(noise_probability=1.0, seed=5))

        def __len__(self):
            return 4

        def __getitem__(self, index):
            return torch.from_numpy(self.augment(_tone(0.05), SR))

    def run():
        torch.manual_seed(0)
        loader = torch.utils.data.DataLoader(Clips(), batch_size=1, num_workers=2)
        return [batch[0] for batch in loader]

    first = run()
    # Items 0 and 1 come from workers 0 and 1, each the first draw of its worker: without reseeding per worker they
    # would be identical.
    assert not torch.equal(first[0], first[1])
    for a, b in zip(first, run()):
        assert torch.equal(a, b)


def test_missing_optional_dependency_names_the_package(monkeypatch):
    import importlib

    real_import = importlib.import_module

    def no_stretch(name, *args):
        if name == "python_stretch":
            raise ImportError("No module named 'python_stretch'")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_stretch)
    with pytest.raises(ImportError, match=r"pip install python-stretch \(or pip install 'hf-prunable-ctc\[augment\]'\)"):
        aug.transpose(_tone(0.1), SR, 1.0)


def test_benchmark_reports_each_part_and_the_chain(rir_bank_path):
    costs = aug.benchmark(_all_on(rir_bank_path), seconds=1.0, clip_s=0.5, repeats=1)
    assert set(costs) == {"speed", "pitch", "reverb", "noise", "silence", "chain"}
    assert all(cost >= 0 and math.isfinite(cost) for cost in costs.values())


def test_state_dict_round_trip_continues_the_draws_and_bad_states_are_refused():
    from hf_prunable_ctc.data.augmentation import AugmentationConfig, WaveformAugmentation

    augmentation = WaveformAugmentation(AugmentationConfig(noise_probability=1.0, noise_colors=["white"]))
    clip = np.zeros(1600, dtype=np.float32) + 0.1
    augmentation(clip, 16000)
    saved = json.loads(json.dumps(augmentation.state_dict()))  # what the checkpoint file holds
    expected = augmentation(clip, 16000)
    fresh = WaveformAugmentation(AugmentationConfig(noise_probability=1.0, noise_colors=["white"]))
    fresh.load_state_dict(saved)
    np.testing.assert_array_equal(fresh(clip, 16000), expected)
    with pytest.raises(ValueError, match="not a WaveformAugmentation state"):
        fresh.load_state_dict({"seed": 3})
