"""Training: the MobileVOS loss (losses.py), the infinite-memory teacher (teacher.py),
training clips (data.py), the loop behind mvos-train (loop.py), validation J&F
(validate.py) and greedy model soups (soup.py)."""
