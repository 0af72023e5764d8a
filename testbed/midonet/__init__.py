"""MidoNet pieces of the testbed: networking-midonet's task tables as its migrations leave them."""
