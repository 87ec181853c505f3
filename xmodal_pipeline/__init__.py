"""Orchestration above both services: the end-to-end demo (``xmodal-demo``), its child processes and report.

It starts ``teacher-server`` and ``student-trainer`` commands as processes and reads what they write; the services
never import it.
"""
