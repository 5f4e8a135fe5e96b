"""ctxzip.middleware"""
