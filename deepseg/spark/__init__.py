"""Spark + Delta Lake glue for deepseg.

``deepseg.spark.session.get_spark`` returns the active SparkSession, or builds a small local
one with Delta Lake from the jars installed by ``scripts/install_jars.py``. Nothing here is
imported eagerly so that ``import deepseg`` never pulls in pyspark.
"""
