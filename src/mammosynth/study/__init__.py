"""Reader study: radiologists judge real vs synthetic images in a local web app.

- :mod:`~mammosynth.study.create`: sample, anonymise, order, invite (``study create``);
- :mod:`~mammosynth.study.db`: the SQLite store (WAL) of items, readers, showings, answers;
- :mod:`~mammosynth.study.server`: the FastAPI reader app (``study serve``);
- :mod:`~mammosynth.study.stats`: accuracy, ROC/AUC (+CI), d', Sokal-Michener, realism means;
- :mod:`~mammosynth.study.analyze`: report.html, metrics.json, answers.csv (``study analyze``).

Only the standard library, numpy and scipy are imported here at package level; FastAPI,
uvicorn and matplotlib load when a command needs them.
"""
