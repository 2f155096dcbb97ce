<?php
// This file is part of the Initech theme for Moodle - https://moodle.org/

/**
 * Strings of theme_initech.
 *
 * @package    theme_initech
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$string['pluginname'] = 'Initech';
$string['choosereadme'] = 'The Initech theme: Boost in Initech colours.';
$string['configtitle'] = 'Initech';
$string['privacy:metadata'] = 'The Initech theme stores no personal data.';
