<?php
// This file is part of Moodle - https://moodle.org/

/**
 * Strings of local_acmetools.
 *
 * @package    local_acmetools
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$string['pluginname'] = 'ACME tools';
$string['privacy:metadata'] = 'ACME tools stores no personal data.';
