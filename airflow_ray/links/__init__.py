"""Operator extra links of airflow-ray."""
