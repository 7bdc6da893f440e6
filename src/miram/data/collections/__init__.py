"""Readers of the public full-field mammography collections (``miram prepare <collection>``).

Each module reads one collection as it ships (its folder tree and metadata files, ``docs/data.md``), maps its
labels onto :mod:`miram.data.collections.schema`, draws or keeps patient-level splits, reports rows and
images that do not join, and hands :class:`miram.data.films.Film` items to
:func:`miram.data.films.prepare_films`.
"""
