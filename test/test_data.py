import functools
import http.server
import os
import threading

import pytest

import dataloader
from conftest import write_gowalla_format, shared_dataset


def test_gowalla_format_counts_and_crlf(tmp_path):
    train = {0: [1, 2], 1: [0], 3: [4, 1]}
    test = {0: [0], 1: [2], 3: [0]}
    for crlf in (False, True):
        folder = write_gowalla_format(str(tmp_path / f"d{crlf}"), train, test, crlf=crlf)
        ds = dataloader.Loader(folder)
        assert (ds.n_users, ds.m_items, ds.trainDataSize, ds.testDataSize) == (4, 5, 5, 3)
        assert ds.testDict == {0: [0], 1: [2], 3: [0]}
        assert [list(p) for p in ds.getUserPosItems([0, 2, 3])] == [[1, 2], [], [1, 4]]
        assert "1 users have no training item (never sampled)" in ds.notes


def test_lastfm_format_one_based_tabs_crlf(tmp_path):
    folder = tmp_path / "lastfm"
    folder.mkdir()
    (folder / "data1.txt").write_bytes(b"1\t2\t10\r\n1\t3\t5\r\n2\t1\t7\r\n")
    (folder / "test1.txt").write_bytes(b"2\t3\t1\r\n3\t1\t2\r\n")
    (folder / "trustnetwork.txt").write_bytes(b"1\t2\r\n2\t3\r\n")
    ds = dataloader.LastFM(str(folder))
    assert (ds.n_users, ds.m_items) == (3, 3)
    assert [list(p) for p in ds.getUserPosItems([0, 1, 2])] == [[1, 2], [0], []]
    assert ds.testDict == {1: [2], 2: [0]}
    assert ds.trustNet.tolist() == [[0, 1], [1, 2]]


def test_shared_lastfm_statistics():
    ds = dataloader.LastFM(shared_dataset("lastfm"))
    assert (ds.n_users, ds.m_items) == (1892, 4489)
    assert len(ds.trainUsers) == 1892 - 14  # 14 users have no training item


# ------------------------------------------------------------------ download
class _Server:
    def __init__(self, root):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        handler.log_message = lambda *a, **k: None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / "mirror"
    write_gowalla_format(str(root / "gowalla"), {0: [0, 1], 1: [2]}, {0: [2], 1: [0]})
    with _Server(root) as server:
        yield server


def test_download_into_place_and_check_statistics(tmp_path, mirror):
    folder = str(tmp_path / "data" / "gowalla")
    dataloader.download_dataset("gowalla", folder, base_url=mirror.url + "gowalla/", expected=(2, 3, 5),
                                progress=False)
    assert sorted(os.listdir(folder)) == ["test.txt", "train.txt"]
    assert dataloader.Loader(folder).trainDataSize == 3


def test_download_with_wrong_statistics_keeps_nothing(tmp_path, mirror):
    folder = str(tmp_path / "data" / "gowalla")
    with pytest.raises(dataloader.DataError, match="does not match its published statistics"):
        dataloader.download_dataset("gowalla", folder, base_url=mirror.url + "gowalla/", progress=False)
    assert os.listdir(folder) == []


def test_download_missing_file_keeps_nothing_and_says_where(tmp_path, mirror):
    folder = str(tmp_path / "data" / "lastfm")
    with pytest.raises(dataloader.DataError, match=r"put data1.txt, test1.txt, trustnetwork.txt into .*lastfm"):
        dataloader.download_dataset("lastfm", folder, base_url=mirror.url + "lastfm/", progress=False)
    assert os.listdir(folder) == []


def test_ensure_dataset_uses_mirror_env(tmp_path, mirror, monkeypatch):
    monkeypatch.setenv(dataloader.MIRROR_ENV, mirror.url)
    monkeypatch.setitem(dataloader.PUBLISHED_STATS, "gowalla", (2, 3, 5))
    logs = []
    folder = dataloader.ensure_dataset("gowalla", str(tmp_path / "data"), log=logs.append, progress=False)
    assert os.path.isfile(os.path.join(folder, "train.txt")) and "downloading" in logs[0]


def test_offline_download_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(dataloader.MIRROR_ENV, "http://127.0.0.1:9/")  # nothing listens on port 9
    with pytest.raises(dataloader.DataError) as err:
        dataloader.ensure_dataset("yelp2018", str(tmp_path / "data"), progress=False)
    assert "could not be downloaded" in str(err.value) and "put train.txt, test.txt into" in str(err.value)
    assert os.listdir(tmp_path / "data" / "yelp2018") == []


@pytest.mark.parametrize("name", ["gowalla", "lastfm"])
def test_published_statistics_match_the_real_datasets(name):
    """A download of the real files would pass the statistics check."""
    folder = shared_dataset(name)
    assert dataloader._count_stats(name, folder) == dataloader.PUBLISHED_STATS[name]
