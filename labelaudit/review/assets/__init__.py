"""Static files of the review page (index.html, review.css, review.js); see labelaudit.review.page."""
