"""ctxzip.evals"""
