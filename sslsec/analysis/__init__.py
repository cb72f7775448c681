"""Analysis of finished runs: norm and cosine diagnostics (:mod:`.diagnostics`) and the SEC study (:mod:`.study`)."""
