"""Triggers of airflow-ray: Ray jobs followed from the triggerer."""
