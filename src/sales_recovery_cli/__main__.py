import sys

from sales_recovery_cli.main import main

sys.exit(main())
