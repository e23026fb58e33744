"""The Celery app of the worker process started by tests/test_tasks.py.

The file-system broker needs no server and no extra package; its folders and the
Django settings come from the environment the test sets. The worker imports
``django_multismtp.tasks`` like a site's ``autodiscover_tasks()`` would.
"""

import os

import django
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings_subprocess")
django.setup()

BROKER_DIR = os.environ["MULTISMTP_CELERY_DIR"]

app = Celery("multismtp_tests")
app.conf.update(
    broker_url="filesystem://",
    broker_transport_options={
        "data_folder_in": os.path.join(BROKER_DIR, "queue"),
        "data_folder_out": os.path.join(BROKER_DIR, "queue"),
        "processed_folder": os.path.join(BROKER_DIR, "processed"),
        "store_processed": False,
        # Broadcast (control) messages go here; by default a "control" folder in the cwd.
        "control_folder": os.path.join(BROKER_DIR, "control"),
        "polling_interval": 0.05,
    },
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    worker_enable_remote_control=False,
)
app.autodiscover_tasks(["django_multismtp"])
