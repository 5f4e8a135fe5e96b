"""ctxzip.retrievers"""
