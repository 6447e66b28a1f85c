"""One SparkSession built from MLSettings, the same on a laptop and a cluster.

``PRODUCTCAT_SPARK_MASTER`` picks the master: ``local[*]`` (default) runs Spark
inside this process's JVM; a URL such as ``spark://host:7077`` sends the same
jobs to a cluster. pyspark is an optional extra (``productcat[spark]``), so it
is imported here, never at module level elsewhere.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

from ml.settings import MLSettings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def is_local(master: str) -> bool:
    return master.strip().startswith("local")


def spark_session(settings: MLSettings, *, app_name: str = "productcat") -> SparkSession:
    """The active session for ``settings.spark_master``, created on first use.

    Arrow carries pandas batches to and from Python workers (mapInPandas);
    the web UI is off (no port to bind in tests or jobs). In local mode the
    shuffle uses few partitions, since 200 tiny tasks cost more than the work.
    """
    from pyspark.sql import SparkSession

    master = settings.spark_master
    if is_local(master):
        # Without it Spark resolves the hostname and may bind a non-loopback address.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # Workers must run this interpreter (the venv with ml/ and its deps), not the first python3 on PATH.
        # A cluster's executors use their own PYSPARK_PYTHON, with productcat installed.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")  # progress bars garble logs and CLI tables
        .config("spark.sql.session.timeZone", "UTC")
    )
    if is_local(master):
        builder = builder.config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    log.info("spark session on %s (Spark %s)", master, session.version)
    return session
