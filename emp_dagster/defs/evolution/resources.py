"""The Spark resource for distributed fitness: dagster-pyspark's LazyPySparkResource when installed."""

import sys

import dagster as dg

from emp_core.config import python_for_spark_workers, settings
from emp_core.errors import EmpError
from emp_core.evolution.spark import LOCAL_CONFIG


class SparkUnavailable(dg.ConfigurableResource):
    """Stands in when pyspark / dagster-pyspark are not installed (the embedded default)."""

    @property
    def spark_session(self):
        raise EmpError("the spark engine needs pyspark and dagster-pyspark: install the 'spark' extra "
                       "(pip install 'emp-predator[spark]'), or run evolution with engine 'in_process'")


def spark_resource() -> dg.ConfigurableResource:
    """LazyPySparkResource on ``EMP_SPARK_MASTER`` (default ``local[2]``; a cluster's master URL); the session
    starts only when a run asks for a Spark path (evolution's spark engine, the sensory cortex's spark compute)."""
    try:
        from dagster_pyspark import LazyPySparkResource
    except ImportError:
        return SparkUnavailable()
    python_for_spark_workers(sys.executable)
    return LazyPySparkResource(spark_config={**LOCAL_CONFIG, "spark.master": settings().spark_master})


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"pyspark": spark_resource()})
