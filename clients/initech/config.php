<?php
// Settings of this client, included by the fleet's config.php from
// /etc/moodle/config.d/ before Moodle starts; site values come from the environment.
$CFG->theme = 'initech';
