<?php
// This file is part of Moodle - https://moodle.org/

/**
 * Strings of local_initechreports.
 *
 * @package    local_initechreports
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$string['pluginname'] = 'Initech reports';
$string['privacy:metadata'] = 'Initech reports stores no personal data.';
