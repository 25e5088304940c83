"""Several processes fetching the same archive at once: every call must succeed."""

import multiprocessing
import traceback

import pytest

from helpers import datasets, download

PROCESSES = 4
ROUNDS = 4


def _fetch_rounds(url, root, barrier, results):
    """Fetch the archive under a new name each round, all processes starting together."""
    for round_ in range(ROUNDS):
        barrier.wait(timeout=60)
        try:
            target = download.fetch_archive(url, f"camvid-{round_}", root=root,
                                            check_tree=datasets.check_camvid_tree)
            # The tree must still be whole after the others have finished installing theirs.
            barrier.wait(timeout=60)
            datasets.check_camvid_tree(target)
            results.put((round_, "ok", str(target)))
        except BaseException:  # reported to the test, which fails on it
            results.put((round_, "error", traceback.format_exc()))
            barrier.abort()
            return


@pytest.mark.slow
def test_concurrent_fetches_of_one_archive_all_succeed(small_camvid_zip, tmp_path):
    context = multiprocessing.get_context("spawn")  # the test session runs server threads
    barrier = context.Barrier(PROCESSES)
    results = context.Queue()
    root = tmp_path / "cache"
    workers = [context.Process(target=_fetch_rounds,
                               args=(small_camvid_zip.as_uri(), str(root), barrier, results))
               for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    reports = []
    for worker in workers:
        worker.join(timeout=120)
    while not results.empty():
        reports.append(results.get(timeout=5))
    # The first failure first: the processes it left waiting report BrokenBarrierError.
    errors = sorted((text for _, status, text in reports if status == "error"),
                    key=lambda text: "BrokenBarrierError" in text)
    assert errors == []
    assert len(reports) == PROCESSES * ROUNDS
    assert all(worker.exitcode == 0 for worker in workers)
    for round_ in range(ROUNDS):
        assert (root / f"camvid-{round_}" / ".complete").is_file()
    # No staging folders or lock files are left behind.
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["downloads"] + [f"camvid-{r}" for r in range(ROUNDS)])


def test_without_fcntl_installs_go_on_unlocked(small_camvid_zip, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "fcntl", None)  # as on Windows
    root = tmp_path / "cache"
    (root / "camvid").mkdir(parents=True)
    (root / "camvid" / "half-written.png").write_bytes(b"junk")  # no .complete: redone
    target = download.fetch_archive(small_camvid_zip.as_uri(), "camvid", root=root,
                                    check_tree=datasets.check_camvid_tree)
    datasets.check_camvid_tree(target)
    assert not (target / "half-written.png").exists()
    assert sorted(p.name for p in root.iterdir()) == ["camvid", "downloads"]


def test_staging_folders_of_killed_runs_are_removed(tmp_path):
    stale = tmp_path / ".model.staging-abc123"
    (stale / "new").mkdir(parents=True)
    (stale / "new" / "big.bin").write_bytes(b"left by a process that was killed")
    unrelated = tmp_path / ".model-two.staging-abc123"  # another folder's: left alone
    unrelated.mkdir()

    def build(folder):
        (folder / ".complete").write_text("done\n")

    target = download.install_folder(tmp_path / "model", build)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model-two.staging-abc123", "model"]
    assert (target / ".complete").is_file()


def test_a_failed_build_leaves_the_old_folder_and_nothing_else(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "kept.txt").write_text("an earlier, incomplete build\n")

    def build(folder):
        (folder / "part.bin").write_bytes(b"half")
        raise OSError("disk full")

    try:
        download.install_folder(tmp_path / "model", build)
    except OSError as e:
        assert "disk full" in str(e)
    else:
        raise AssertionError("the build's error was swallowed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["kept.txt"]


def test_a_file_system_that_cannot_lock_installs_unlocked_and_spares_other_staging(tmp_path, monkeypatch):
    import errno

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(download.fcntl, "flock", no_locks)  # as on some network mounts
    busy = tmp_path / ".model.staging-running"  # maybe another process's build in progress
    busy.mkdir()

    def build(folder):
        (folder / ".complete").write_text("done\n")

    with download.install_lock(tmp_path / "model") as locked:
        assert locked is False
    target = download.install_folder(tmp_path / "model", build)
    assert (target / ".complete").is_file()
    # Unlocked, a staging folder may belong to a live process: it is not deleted; no lock file stays.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.staging-running", "model"]
