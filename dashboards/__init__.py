"""Look at a search: Optuna Dashboard on the study store, Pareto plots, shareable reports.

This package reads the study store (Optuna's tables and ``npas_results``) and nothing
else of npas: not the controller, not the trials.

Example:
    >>> import dashboards
    >>> with dashboards.DashboardServer("sqlite:///npas.db", port=8080) as server:  # doctest: +SKIP
    ...     print(server.url)
    http://127.0.0.1:8080/dashboard
    >>> dashboards.plot_pareto("sqlite:///npas.db", "demo", "pareto.html")  # doctest: +SKIP
    >>> dashboards.write_report("sqlite:///npas.db", "demo", "report/")  # doctest: +SKIP
"""

from dashboards._pareto import hypervolume, hypervolume_history, pareto_mask
from dashboards._plots import PLOT_SUFFIXES, check_plot_path, plot_pareto, plot_pareto_data
from dashboards._report import Report, write_report
from dashboards._server import DashboardServer
from dashboards._store import StudyData, load_study, load_trials, mask_url, resolve_url

__all__ = [
    "PLOT_SUFFIXES",
    "DashboardServer",
    "Report",
    "StudyData",
    "check_plot_path",
    "hypervolume",
    "hypervolume_history",
    "load_study",
    "load_trials",
    "mask_url",
    "pareto_mask",
    "plot_pareto",
    "plot_pareto_data",
    "resolve_url",
    "write_report",
]
