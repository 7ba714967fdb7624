"""Operations: failure drills and soak runs against a scratch stack (``workbench drill``,
``workbench soak``)."""
