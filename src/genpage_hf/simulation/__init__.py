"""The simulated world: catalog, users, browsing behaviour, policies, impression logs and the A/B judge.

A data source and a judge, like a user's production system: nothing in model or training code
imports it. Typical use:

    world = World(WorldConfig(seed=0))
    users = UserPopulation(world, n_users=1000, seed=0)
    write_logs(world, users, days=14, seed=0, out_dir="logs")        # impression logs (Parquet)
    report = run_ab(world, users, [RandomPolicy(world), ProductionPolicy(world),
                                   OraclePolicy(world, users)], n_requests=4000)
"""

from .ab import ABReport, ArmResult, RewardStats, run_ab
from .behavior import Noise, PageViews, affinity, simulate_page_views
from .engine import Served, run_day, serve, serve_next_page
from .logs import load_log_dataset, load_logs, warm_up, world_from_logs, write_logs
from .pages import PageBatch, PageGrammarError, pages_from_dicts, validate_pages
from .policies import OraclePolicy, Policy, ProductionPolicy, RandomPolicy, make_policy
from .rows import eligibility, eligible_counts, eligible_mask, requests_from_contexts
from .sessions import first_page_context, next_page_requests, session_continues
from .users import RequestBatch, UserPopulation
from .world import BehaviorConfig, World, WorldConfig

__all__ = ["ABReport", "ArmResult", "BehaviorConfig", "Noise", "OraclePolicy", "PageBatch", "PageGrammarError",
           "PageViews", "Policy", "ProductionPolicy", "RandomPolicy", "RequestBatch", "RewardStats", "Served",
           "UserPopulation", "World", "WorldConfig", "affinity", "eligibility", "eligible_counts", "eligible_mask",
           "first_page_context", "load_log_dataset", "load_logs", "make_policy", "next_page_requests",
           "pages_from_dicts", "requests_from_contexts", "run_ab", "run_day", "serve", "serve_next_page",
           "session_continues", "simulate_page_views", "validate_pages", "warm_up", "world_from_logs", "write_logs"]
