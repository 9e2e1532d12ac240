"""One module per experiment notebook: the steps a notebook calls, each returning a table, arrays or a dict.

``common`` holds what every notebook does first (check parameters, open the results directory, load the model).
"""
