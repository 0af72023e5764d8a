from __future__ import annotations

import pytest

from stackhop.dbexport import live
from stackhop.sqlurl import with_shipped_driver


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u:p@127.0.0.1:5432/nova", "postgresql+psycopg"),
        ("mysql://u:p@127.0.0.1/nova?charset=utf8", "mysql+pymysql"),
        ("mysql+pymysql://u:p@127.0.0.1/nova", "mysql+pymysql"),
        ("postgresql+psycopg2://u:p@127.0.0.1/nova", "postgresql+psycopg2"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_services_url_schemes_get_the_shipped_driver(url: str, driver: str) -> None:
    assert with_shipped_driver(url).drivername == driver


def test_live_rows_condition_follows_the_deleted_column() -> None:
    assert live({"name"}) == "1 = 1"
    assert live({"deleted", "name"}) == "deleted = 0"
    assert live({"deleted"}, boolean=True) == "deleted = false"
