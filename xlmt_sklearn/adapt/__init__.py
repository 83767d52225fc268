"""Adapting an encoder to labels: the fine-tune (:mod:`._train`) and its folders (:mod:`._folder`).

Used by :class:`xlmt_sklearn.XLMTFineTunedVectorizer`; torch and transformers are
imported inside the functions only.
"""
