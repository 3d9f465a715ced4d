"""`peftzoo d90` arguments and entry point."""


def add_arguments(p):
    p.add_argument("--task", default="digits")


def run_d90(args):
    raise RuntimeError("peftzoo d90 is not built yet")
