"""The pure model of a tidegate project: no I/O, nothing imported from the rest of tidegate."""
