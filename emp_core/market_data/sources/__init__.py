"""Where bars come from. Each source returns raw rows with canonical column names;
validation and storage are the ingest path's job, the same for every source."""

from emp_core.market_data.sources.base import BarSource, Coverage
from emp_core.market_data.sources.files import FileSource
from emp_core.market_data.sources.shipped import ShippedSource
from emp_core.market_data.sources.synthetic import SyntheticSource, generate_bars
from emp_core.market_data.sources.yahoo import YahooSource, parse_chart_response

__all__ = [
    "BarSource", "Coverage", "FileSource", "ShippedSource", "SyntheticSource", "YahooSource",
    "generate_bars", "parse_chart_response",
]
