"""2,000 consecutive training-clip decodes in a DataLoader worker keep its resident memory flat (per backend)."""
import pytest
import torch

from datamodules.howto100m import HowTo100MDataModule
from reliability_media import data_config, toy_tokenizer, write_corpus

DECODES, WARMUP, MAX_GROWTH_MIB = 2000, 200, 20.0


class WorkerRss(torch.utils.data.Dataset):
    """Each item: one training sample of `dataset` decoded in the worker, and the worker's RSS afterwards."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return DECODES + WARMUP

    def __getitem__(self, i):
        import psutil

        out = self.dataset[i]  # sample index i: epoch i // n, item i % n
        return out["failures"], psutil.Process().memory_info().rss


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_worker_memory_stays_flat_over_2000_decodes(tmp_path, backend):
    pytest.importorskip("psutil")
    from tqdm.auto import tqdm

    from datamodules.video.decode import worker_init

    narrations = [(float(s), float(s + 2), "stir the pan") for s in range(0, 9, 2)]
    write_corpus(tmp_path, {f"v{i}": dict(num_frames=100, width=160, height=120) for i in range(4)},  # 10 s each
                 narrations={f"v{i}": narrations for i in range(4)}, num_good=0)
    dm = HowTo100MDataModule(data_config(tmp_path, backend=backend, resize=64, crop=64, num_frames=8, fps=4.0),
                             tokenizer=toy_tokenizer, progress=False)
    dm.setup()
    dm.train_dataloader()
    loader = torch.utils.data.DataLoader(WorkerRss(dm.dataset), batch_size=None, num_workers=1,
                                         worker_init_fn=worker_init, timeout=120)
    rss, failures = [], 0
    for fails, value in tqdm(loader, total=DECODES + WARMUP, desc=f"{backend} decodes", leave=False):
        failures += int(fails)
        rss.append(value)
    base, end, peak = rss[WARMUP - 1], rss[-1], max(rss[WARMUP:])
    growth, peak_growth = (end - base) / 2**20, (peak - base) / 2**20
    print(f"\n{backend}: worker RSS {base / 2**20:.1f} MiB after {WARMUP} warm-up decodes, {growth:+.1f} MiB after "
          f"{DECODES} more (peak {peak_growth:+.1f} MiB), {failures} failed decodes")
    assert failures == 0
    assert growth < MAX_GROWTH_MIB and peak_growth < 2 * MAX_GROWTH_MIB
