"""The Spark resource for distributed fitness: dagster-pyspark's LazyPySparkResource when installed."""

import sys

import dagster as dg

from emp_core.config import python_for_spark_workers
from emp_core.errors import EmpError
from emp_core.evolution.spark import LOCAL_CONFIG


class SparkUnavailable(dg.ConfigurableResource):
    """Stands in when pyspark / dagster-pyspark are not installed (the embedded default)."""

    @property
    def spark_session(self):
        raise EmpError("the spark engine needs pyspark and dagster-pyspark: install the 'spark' extra "
                       "(pip install 'emp-predator[spark]'), or run evolution with engine 'in_process'")


def spark_resource() -> dg.ConfigurableResource:
    """LazyPySparkResource on ``local[2]`` (a cluster's master URL goes in ``spark.master``); the
    session starts only when a run asks for the spark engine."""
    try:
        from dagster_pyspark import LazyPySparkResource
    except ImportError:
        return SparkUnavailable()
    python_for_spark_workers(sys.executable)
    return LazyPySparkResource(spark_config=dict(LOCAL_CONFIG))


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"pyspark": spark_resource()})
