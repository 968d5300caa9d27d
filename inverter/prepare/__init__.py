"""`python -m inverter.prepare NAME`: data sets written once as prepared TFDS
data sets, read afterwards like any other (`data.source=NAME`,
`data.data_dir=DIR`). One module per data set; see __main__.py."""
