"""ctxzip.proxy"""
