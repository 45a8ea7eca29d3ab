def main(argv=None):  # filled in by the engine work
    raise SystemExit("unetseg: not implemented yet")
