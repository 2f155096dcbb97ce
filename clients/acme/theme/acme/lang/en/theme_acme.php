<?php
$string['pluginname'] = 'ACME';
$string['choosereadme'] = 'The ACME Corporation theme.';
