"""Classifiers score queries against route labels; see ``base.Classifier``."""

from langchain_herd.classifiers.base import Classifier, SavedClassifier, load_classifier

__all__ = ["Classifier", "SavedClassifier", "load_classifier"]
