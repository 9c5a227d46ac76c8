"""The mqtt process: the bridge between the site's broker and the appliance."""
