"""LeNet-5 on CIFAR-10 in the browser: `streamlit run app.py`. Only the router; each page is a file in pages/."""

from pages._shared import route

route()
